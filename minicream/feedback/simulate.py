"""Simulated ratings: a stand-in for people, so that what ratings change can be measured before anyone rates.

For each rating the model draws k best-of-N candidates of a prompt (a concept name), and the project's
nearest-real-image judge (minicream.eval.nearest.NearestJudge: it grades a drawing by its best-matching real
emoji of that concept, as the issues' independent check does) picks the winner, the one a careful person
would pick; the candidates and the choice go into a FeedbackStore as the server would record them.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..errors import MinicreamError
from ..evaluator.rerank import MAX_CANDIDATES, candidate_seeds
from .store import FeedbackLimits, FeedbackStore, png_sha256

# A simulation writes hundreds of ratings a minute from one "client": the flood limits would refuse them.
SIMULATION_LIMITS = FeedbackLimits(max_ratings_per_minute=10**9, max_ratings_per_minute_all=10**9)
SIMULATED_CLIENT = "simulated"


@dataclass(frozen=True)
class SimulatedRating:
    prompt: str
    seeds: tuple[int, ...]  # one per candidate, as drawn
    hashes: tuple[str, ...]  # sha256 of each candidate's PNG
    scores: tuple[float, ...]  # the judge's score of each candidate for the prompt
    winner: int  # index of the judge's pick (the lowest index among ties)
    set_id: int | None  # the candidate set in the store, when one was given


def png_bytes(image) -> bytes:
    """A PIL image as plain PNG bytes (no text chunks: the same pixels always give the same hash)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def judge_scores(judge, images, prompt: str, labels: Sequence[str]) -> torch.Tensor:
    """(k,) how well each image shows `prompt`: the nearest judge's best similarity to a real image of it; another
    judge (the learned one) by its zero-shot probability of `prompt` among `labels`."""
    if hasattr(judge, "similarities"):
        return judge.similarities(images, [prompt])[:, 0]
    labels = list(labels)
    return judge.class_probs(images, labels)[:, labels.index(prompt)]


def simulate_ratings(pipe, prompts: Sequence[str], n: int, judge, *, candidates: int = 4, seed: int = 0,
                     store: FeedbackStore | None = None, generate_options: dict | None = None,
                     progress: bool = True) -> list[SimulatedRating]:
    """`n` simulated ratings, cycling through `prompts` (concept names the judge knows). `pipe`: a Pipeline, a
    model folder, or any callable `pipe(prompt, num_images=k, seed=[...], **generate_options) -> [PIL images]`.
    Rating i draws `candidates` images with the best-of-N seeds of seed + i (re-running gives the same images).
    With `store` (opened with SIMULATION_LIMITS), each rating is recorded as the server records a person's."""
    if isinstance(pipe, (str, Path)):
        from ..pipelines import Pipeline

        pipe = Pipeline.from_pretrained(pipe)
    prompts = list(prompts)
    if not prompts or not isinstance(n, int) or n < 0:
        raise MinicreamError("simulate_ratings: give at least one prompt and n >= 0 ratings")
    if not isinstance(candidates, int) or not 2 <= candidates <= MAX_CANDIDATES:
        raise MinicreamError(f"candidates: an integer in 2..{MAX_CANDIDATES} (a rating picks one of several)")
    known = set(getattr(judge, "concepts", prompts))
    unknown = [p for p in dict.fromkeys(prompts) if p not in known]
    if unknown:
        raise MinicreamError(f"the judge has no real image of {', '.join(map(repr, unknown[:5]))}; simulate with concept names it knows")
    labels, options, out = sorted(set(prompts)), dict(generate_options or {}), []
    for i in tqdm(range(n), desc="simulated ratings", disable=not progress, leave=False):
        prompt = prompts[i % len(prompts)]
        seeds = candidate_seeds([seed + i], candidates)
        images = pipe(prompt, num_images=candidates, seed=seeds, **options)
        pngs = [png_bytes(im) for im in images]
        first: dict[str, int] = {}
        for j, p in enumerate(pngs):  # two seeds that draw the very same picture: one candidate
            first.setdefault(png_sha256(p), j)
        keep = sorted(first.values())
        if len(keep) < 2:
            continue  # nothing to choose between
        scores = judge_scores(judge, [images[j] for j in keep], prompt, labels).float()
        winner = int(torch.argmax(scores))  # first maximum: ties go to the lower index
        hashes = tuple(png_sha256(pngs[j]) for j in keep)
        set_id = None
        if store is not None:
            settings = {"seeds": [seeds[j] for j in keep], "simulated_by": getattr(judge, "name", type(judge).__name__), **options}
            set_id = store.record_candidates(prompt, settings, list(hashes), [pngs[j] for j in keep], client=SIMULATED_CLIENT)
            store.record_choice(hashes[winner], set_id=set_id, client=SIMULATED_CLIENT)
        out.append(SimulatedRating(prompt, tuple(seeds[j] for j in keep), hashes, tuple(round(float(s), 6) for s in scores),
                                   winner, set_id))
    return out
