"""Named benchmarks: a prompt set, samples per prompt, per-sample seeds and the real reference images.

    minicream-table  the mini-CREAM paper's table: prompts "orange", "apple" (+ "dog"), rows FID / IS / SSIM,
                     against the real images of those concepts
    objects          every caption of the held-out split (skin-tone variants left out), one sample each,
                     against the held-out images
    concepts         every concept the model was trained on, by name, 4 samples each, against the real
                     images of those concepts: prompt adherence over the model's whole vocabulary
    coverage         a seeded random sample of concepts from the dataset's whole vocabulary (skin tones left out),
                     each asked for twice: "name, style" in a random design it exists in, and the bare name;
                     judged among every concept; pairwise SSIM of the bare-name samples measures variety
    scenes           GenEval-style compositional prompts on emoji concepts: single object, two objects,
                     counting, colours, position, colour attribution (+ size)
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..data.scene_layout import DEFAULT_CONCEPTS, RELATIONS
from ..data.scenes import scene_prompts
from ..errors import MinicreamError

# The paper's prompts, and which dataset concepts count as a correct drawing of each.
TABLE_PROMPTS = {"orange": ["tangerine"], "apple": ["red apple", "green apple"], "dog": ["dog face", "dog"]}
# The paper's table (their models, their data, InceptionV3 features; CIFAR-style 32 px images).
PAPER_TABLE = {"FID": {"kandinsky": 459.27, "midjourney": 171.27, "mini-CREAM": 444.60},
               "IS": {"kandinsky": 1.08, "midjourney": 1.02, "mini-CREAM": 1.05},
               "SSIM": {"kandinsky": 0.3694, "midjourney": 0.2319, "mini-CREAM": 1.000}}
COLORS = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES = ("heart", "circle", "square")
SCENE_SEED = 20_261_122  # held-out: the training scenes use the recipe's seed
TASKS = ("single_object", "two_objects", "counting", "colors", "position", "color_attr", "size")
GENEVAL_TASKS = TASKS[:6]


@dataclass
class Benchmark:
    name: str
    prompts: list[dict]  # {"prompt", "spec" (adherence check), "reference" (accepted concepts)}
    samples: int  # per prompt
    seed: int = 0
    pool: list[str] = field(default_factory=list)  # concepts the judge chooses among
    real: str = "none"  # "concepts": real images of the reference concepts; "test": the held-out split

    def sample_seeds(self, prompt_index: int) -> list[int]:
        """Per-sample seeds: a function of (benchmark seed, prompt index, sample index) only."""
        return [self.seed + 1000 * prompt_index + k for k in range(self.samples)]


def _table(samples: int) -> Benchmark:
    prompts = [{"prompt": p, "reference": c, "spec": {"kind": "single_object", "objects": [c[0]], "accept": c}}
               for p, c in TABLE_PROMPTS.items()]
    return Benchmark("minicream-table", prompts, samples or 16, real="concepts")


def _objects(samples: int, test_examples) -> Benchmark:
    seen, prompts = set(), []
    for ex in test_examples:
        concept = ex.meta.get("concept")
        # skin-tone variants differ only in a few pixels of skin colour; the reference recipe leaves them out
        if concept and ex.text not in seen and ex.meta.get("skin_tone") is None:
            seen.add(ex.text)
            prompts.append({"prompt": ex.text, "reference": [concept], "spec": {"kind": "single_object", "objects": [concept]}})
    if not prompts:
        raise MinicreamError("the objects benchmark needs a held-out split with 'concept' metadata (build it with `minicream data emoji`)")
    return Benchmark("objects", prompts, samples or 1, real="test")


def _concepts(samples: int, concepts: list[str]) -> Benchmark:
    if not concepts:
        raise MinicreamError("the concepts benchmark needs the model's concept list (its vocabulary.json)")
    prompts = [{"prompt": c, "reference": [c], "spec": {"kind": "single_object", "objects": [c]}} for c in sorted(concepts)]
    return Benchmark("concepts", prompts, samples or 4, real="concepts")


def scene_specs(per_task: int, seed: int = SCENE_SEED, concepts=DEFAULT_CONCEPTS) -> list[dict]:
    """Prompts with machine-checkable specs for the GenEval-style tasks (deterministic in `seed`)."""
    rng = random.Random(seed)
    out = []
    for c in rng.sample(list(concepts), per_task):
        out.append({"prompt": c, "spec": {"kind": "single_object", "objects": [c]}})
    for kind in ("two_objects", "counting", "position", "size"):
        for plan in scene_prompts(per_task, seed=seed + len(out), concepts=concepts, kinds=[kind]):
            spec = {"kind": kind, "objects": list(dict.fromkeys(o.concept for o in plan.layout))}
            if kind == "size":  # the check reads (big, small); the caption may name the small one first
                spec["objects"].sort(key=lambda c: f"big {c}" not in plan.text)
            if kind == "counting":
                spec["count"] = len(plan.layout)
            if kind == "position":
                spec["relation"] = plan.relation
            out.append({"prompt": plan.text, "spec": spec})
    colored = [f"{c} {s}" for s in SHAPES for c in COLORS]
    for _ in range(per_task):
        shape = rng.choice(SHAPES)
        color = rng.choice(COLORS)
        out.append({"prompt": f"{color} {shape}", "spec": {"kind": "colors", "objects": [f"{color} {shape}"],
                                                          "choices": [f"{c} {shape}" for c in COLORS]}})
    for _ in range(per_task):
        a, b = rng.sample(colored, 2)
        while a.split()[1] == b.split()[1]:  # different shapes, so the colour must bind to the right one
            a, b = rng.sample(colored, 2)
        out.append({"prompt": f"a {a} and a {b}", "spec": {"kind": "color_attr", "objects": [a, b], "choices": colored}})
    return out


def _scenes(samples: int) -> Benchmark:
    prompts = [{**p, "reference": p["spec"]["objects"]} for p in scene_specs(8)]
    pool = sorted(set(DEFAULT_CONCEPTS))
    return Benchmark("scenes", prompts, samples or 2, pool=pool)


COVERAGE_SEED = 20_261_202  # fixed: the sample of concepts does not depend on the model or on --seed
COVERAGE_CONCEPTS = 200


def coverage_concepts(rows: list[dict], n: int = COVERAGE_CONCEPTS, seed: int = COVERAGE_SEED) -> list[tuple[str, str]]:
    """`n` (concept, style) pairs drawn from dataset metadata rows: concepts uniformly, then one of their designs."""
    styles: dict[str, set[str]] = {}
    for r in rows:
        if r.get("concept") and r.get("skin_tone") is None and r.get("style"):
            styles.setdefault(r["concept"], set()).add(r["style"])
    if not styles:
        raise MinicreamError("the coverage benchmark needs an emoji dataset with concept and style metadata "
                             "(build it with `minicream data emoji data/emoji`)")
    rng = random.Random(seed)
    chosen = rng.sample(sorted(styles), min(n, len(styles)))
    return [(c, rng.choice(sorted(styles[c]))) for c in chosen]


def _coverage(samples: int, pairs: list[tuple[str, str]], pool: list[str]) -> Benchmark:
    prompts = []
    for concept, style in pairs:
        spec = {"kind": "single_object", "objects": [concept]}
        prompts.append({"prompt": f"{concept}, {style}", "reference": [concept], "spec": spec, "group": "styled"})
        prompts.append({"prompt": concept, "reference": [concept], "spec": spec, "group": "plain"})
    return Benchmark("coverage", prompts, samples or 2, pool=pool, real="concepts")


BENCHMARKS = ("minicream-table", "objects", "concepts", "coverage", "scenes")


def get_benchmark(name: str, samples: int | None = None, test_examples=None, seed: int = 0, limit: int | None = None,
                  concepts: list[str] | None = None, dataset_rows: list[dict] | None = None,
                  styles: list[str] | None = None) -> Benchmark:
    """`limit`: keep only the first `limit` prompts (a quicker, still deterministic subset); `concepts`: the
    model's concepts (the `concepts` benchmark); `dataset_rows`: metadata of the whole dataset (`coverage`), whose
    prompts use only the designs in `styles` (the model's) when given; the judge still chooses among every concept."""
    if samples is not None and samples < 1:
        raise MinicreamError(f"samples per prompt must be at least 1, got {samples}")
    if limit is not None and limit < 1:
        raise MinicreamError(f"limit must be at least 1 prompt, got {limit}")
    if name == "minicream-table":
        bench = _table(samples)
    elif name == "objects":
        bench = _objects(samples, test_examples or [])
    elif name == "concepts":
        bench = _concepts(samples, concepts or [])
    elif name == "coverage":
        rows = dataset_rows or []
        pool = sorted({r["concept"] for r in rows if r.get("concept") and r.get("skin_tone") is None})
        drawable = [r for r in rows if not styles or r.get("style") in styles]
        bench = _coverage(samples, coverage_concepts(drawable), pool)
    elif name == "scenes":
        bench = _scenes(samples)
    else:
        raise MinicreamError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    bench.seed = seed
    if limit is not None:
        bench.prompts = bench.prompts[:limit]
    return bench


__all__ = ["BENCHMARKS", "Benchmark", "coverage_concepts", "GENEVAL_TASKS", "PAPER_TABLE", "RELATIONS", "TASKS", "get_benchmark", "scene_specs"]
