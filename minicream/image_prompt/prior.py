"""The prior at sampling time: text -> image embedding (models/prior.py; trained by `minicream train-prior`,
image_prompt/train_prior.py), so a prompt can be drawn through the image-prompt adapter (`--prior`: text -> prior ->
embedding -> UNet, with the text too), and texts mixed with images in embedding space (pipelines/fuse.py).
A prior is refused when made for another evaluator (prior.json records its hash).
"""
from __future__ import annotations

import torch

from ..errors import MinicreamError
from ..io.atomic import read_json
from ..io.model_dir import IMAGE_PROMPT_DIR, PRIOR_DIR
from ..models.prior import EmbeddingPrior, sample_prior

PRIOR_SETTINGS = "prior.json"
MAX_PRIOR_STEPS = 100


def has_prior(pipe) -> bool:
    return (pipe.model_dir / IMAGE_PROMPT_DIR / PRIOR_DIR / "config.json").is_file()


def load_prior(pipe) -> EmbeddingPrior:
    """The model's prior, loaded once per pipeline (fp32: it is small), refused when made for another evaluator."""
    prior = pipe.__dict__.get("_prior")
    if prior is None:
        from .use import evaluator_hash

        folder = pipe.model_dir / IMAGE_PROMPT_DIR / PRIOR_DIR
        if not has_prior(pipe):
            raise MinicreamError(f"{pipe.model_dir.name} has no prior (train one with `minicream train-prior`)")
        made = read_json(folder / PRIOR_SETTINGS) if (folder / PRIOR_SETTINGS).is_file() else {}
        if made.get("evaluator_hash") != evaluator_hash(pipe):
            raise MinicreamError(f"{folder}: this prior was trained for another evaluator ({made.get('evaluator_hash')}, "
                                 f"the model's is {evaluator_hash(pipe)}); train it again with `minicream train-prior`")
        prior = pipe._prior = EmbeddingPrior.from_pretrained(folder).to(pipe.device)
    return prior


def prior_embeddings(pipe, texts: list[str], seeds: list[int], steps: int = 25, guidance: float = 4.0) -> torch.Tensor:
    """Unit-norm image embeddings (B, E) the prior draws for `texts` (one per seed), each from its seed's generator."""
    if not 1 <= int(steps) <= MAX_PRIOR_STEPS:
        raise MinicreamError(f"prior_steps must be 1 to {MAX_PRIOR_STEPS}, got {steps}")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= float(guidance) <= 20:
        raise MinicreamError(f"prior_guidance must be a number from 0 to 20, got {guidance!r}")
    prior = load_prior(pipe)
    pooled = pipe.encode_prompt(list(texts)).pooled.to(pipe.device)
    null = pipe.encode_prompt("").pooled.to(pipe.device)
    gens = [torch.Generator("cpu").manual_seed((int(s) + PRIOR_SEED_OFFSET) % 2 ** 63) for s in seeds]
    return sample_prior(prior, pooled, null, gens, int(steps), float(guidance)).cpu()


PRIOR_SEED_OFFSET = 0x9210  # the prior's noise comes from a generator of its own per image (seed + this)
PRIOR_STEPS, PRIOR_GUIDANCE = 25, 4.0


def prior_prompt(pipe, text: str, seeds: list[int], scale: float = 1.0):
    """An ImagePrompt of one prior embedding per image (by its seed) for `text` (image_prompt/use.py)."""
    from .use import ImagePrompt, _check_scale, load_adapter

    adapter = load_adapter(pipe)  # refuse a model without an adapter before sampling the prior
    embeds = prior_embeddings(pipe, [text] * len(seeds), seeds, PRIOR_STEPS, PRIOR_GUIDANCE)
    record = {"prior": True, "scale": _check_scale(scale), "prior_steps": PRIOR_STEPS, "prior_guidance": PRIOR_GUIDANCE}
    return ImagePrompt(adapter, embeds[None], [record["scale"]], [record])

__all__ = ["PRIOR_SETTINGS", "has_prior", "load_prior", "prior_embeddings", "prior_prompt"]
