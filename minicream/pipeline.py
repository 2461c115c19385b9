"""Text-to-image pipeline: `Pipeline.from_pretrained(dir)(prompt, ...)` -> list of PIL images.

Stages (as in diffusers' StableDiffusionPipeline.__call__):
    1. check inputs   2. encode prompt and negative prompt   3. draw the initial noise, one CPU
    generator per image   4. denoise in fixed-size chunks with classifier-free guidance   5. decode
    6. attach the generation parameters (written into the PNG by `save_png`)
Chunks always have the same size (the last one is padded), so an image depends only on its own seed and
settings, never on how many images were asked for together.
"""
from __future__ import annotations

import json
import numbers
import random
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from .diffusion.samplers import available_samplers, cfg_model_fn, sample, start_index
from .errors import MinicreamError
from .filter import FilterResult
from .evaluator.rerank import best_indices, candidate_seeds, check_candidates
from .io.weights import short_hash
from .models.autoencoder import decode, encode, load_autoencoder
from .models.base import WEIGHTS_NAME
from .models.build import load_unet
from .precision import fast_bf16
from .text.encoder import TextEncoder
from .training.recipe import MODEL_INDEX

MAX_STEPS, MAX_GUIDANCE, MAX_IMAGES = 500, 50.0, 256
PARAMS_KEY = "minicream"  # PIL image.info key holding the generation parameters


def default_model_dir() -> Path:
    """The shipped reference model, inside the installed package."""
    return Path(__file__).parent / "reference"


DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def unet_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype | None:
    """None = fp32 weights (under bf16 autocast where bf16 is fast); torch.bfloat16 = bf16 weights, no autocast;
    "auto" (the default) = bf16 where the hardware computes it fast (precision.py), else fp32."""
    if dtype == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise MinicreamError(f"unknown dtype {dtype!r}; choose auto, bf16 or fp32")
    return DTYPES[dtype]


class Pipeline:
    def __init__(self, unet, vae, text_encoder: TextEncoder, index: dict, model_dir: Path, device: str = "cpu"):
        self.unet, self.vae, self.text_encoder, self.index = unet, vae, text_encoder, index
        self.model_dir, self.device = Path(model_dir), torch.device(device)
        # bf16 weights run the UNet without autocast (no per-call weight casts: ~1.15x faster sampling on this
        # CPU); fp32 weights run under bf16 autocast, as the UNet was trained.
        self.unet_dtype = next(unet.parameters()).dtype
        self.model_hash = short_hash(self.model_dir / "unet" / WEIGHTS_NAME)
        self.latent_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.image_size = int(index["image_size"])
        self.defaults = index.get("sample", {})

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, device: str = "cpu",
                        dtype: str | torch.dtype | None = "auto") -> "Pipeline":
        """dtype: the UNet's weights. bf16 (the shipped weights are stored in bf16) runs it without autocast;
        None or "fp32" keeps fp32 weights, under bf16 autocast (the training-time numerics) where bf16 is fast;
        "auto" (default) is bf16 on hardware with fast bf16 (AMX, AVX512-BF16, CUDA) and fp32 elsewhere."""
        dtype = unet_dtype(dtype, device)
        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        index_path = model_dir / MODEL_INDEX
        if not index_path.is_file():
            raise MinicreamError(f"{model_dir}: not a minicream model directory (missing {MODEL_INDEX})")
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as e:
            raise MinicreamError(f"{index_path}: not valid JSON ({e})") from None
        unet = load_unet(model_dir / "unet").to(device, dtype=dtype, memory_format=torch.channels_last)
        vae = load_autoencoder(model_dir / "vae").to(device)
        te = index["text_encoder"]
        encoder = TextEncoder.load(None if te["name"] == "minilm" else te["name"], max_length=te["max_length"], device=device)
        return cls(unet, vae, encoder, index, model_dir, device)

    @property
    def samplers(self) -> list[str]:
        return available_samplers(self.index["objective"]["prediction_type"])

    # 1. -------------------------------------------------------------------------------------------
    def _check(self, prompt: str, num_images: int, steps: int, guidance: float, sampler: str, batch_size: int) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise MinicreamError("prompt is empty; describe what to draw, e.g. \"red apple\"")
        if not 1 <= num_images <= MAX_IMAGES:
            raise MinicreamError(f"num_images must be in 1..{MAX_IMAGES}, got {num_images}")
        if not 1 <= steps <= MAX_STEPS:
            raise MinicreamError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
        if not 0.0 <= guidance <= MAX_GUIDANCE:
            raise MinicreamError(f"guidance must be in 0..{MAX_GUIDANCE}, got {guidance}")
        if sampler not in self.samplers:
            raise MinicreamError(f"unknown sampler {sampler!r}; choose one of: {', '.join(self.samplers)}")
        if not 1 <= batch_size <= 256:
            raise MinicreamError(f"batch_size must be in 1..256, got {batch_size}")

    @property
    def vocabulary(self):
        """The model's concepts for the language filter (concepts.json, else vocabulary.json), loaded once."""
        if getattr(self, "_vocabulary", None) is None:
            from .filter import load_vocabulary

            self._vocabulary = load_vocabulary(self.model_dir)
        return self._vocabulary

    def filter_prompt(self, prompt: str, filter: str | FilterResult = "offline", style: str | None = None,
                      llm=None) -> FilterResult:
        """Run the language filter ("offline", "llm" or "none"; see minicream.filter) on `prompt`.

        A FilterResult passed as `filter` (e.g. rebuilt from a PNG's metadata) is used as it is, so a re-run
        reads exactly the text the original run read."""
        from .filter import rewrite

        if isinstance(filter, FilterResult):
            if filter.prompt != prompt:
                raise MinicreamError("the given FilterResult was made for another prompt")
            return filter
        vocab = None if filter == "none" else self.vocabulary
        return rewrite(prompt, filter, vocab, style=style, encoder=self.text_encoder, llm=llm)

    def _model_fn(self, cond, uncond, guidance: float) -> Callable:
        half = self.unet_dtype != torch.float32

        def unet_fn(x, t, emb):
            x = x.to(self.unet_dtype).contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=not half and fast_bf16(self.device)):
                return self.unet(x, t, emb.hidden.to(self.unet_dtype), emb.mask, emb.pooled).float()

        if guidance == 1.0:
            return lambda x, t: unet_fn(x, t, cond)
        both = _cat_embeddings(uncond, cond)
        return cfg_model_fn(lambda x, t: unet_fn(x, t, both), guidance)

    @torch.inference_mode()  # not only no_grad: no version counters or view tracking (1.15x faster sampling here)
    def __call__(self, prompt: str, negative_prompt: str = "", num_images: int = 1, steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None, seed: int | Sequence[int] | None = None,
                 batch_size: int = 8, size: int | None = None, progress: bool = False,
                 callback: Callable[[int, int], None] | None = None,
                 filter: str | FilterResult = "offline", style: str | None = None, llm=None, num_candidates: int = 1,
                 keep_top: int = 1) -> list[Image.Image]:
        """num_candidates > 1: best-of-N, each image is the evaluator's favourite of N candidates drawn from
        seeds derived from its own seed; keep_top > 1 returns that many best candidates per image, best first."""
        steps = int(steps if steps is not None else self.defaults.get("steps", 20))
        guidance = float(guidance if guidance is not None else self.defaults.get("guidance", 4.0))
        sampler = sampler or self.defaults.get("sampler", "dpmpp_2m")
        self._check(prompt, num_images, steps, guidance, sampler, batch_size)
        # 1b. Language filter: what the person typed -> the captions the model was trained on.
        filtered = self.filter_prompt(prompt, filter, style=style, llm=llm)
        if size is not None and size != self.image_size:
            raise MinicreamError(f"this model draws {self.image_size}x{self.image_size} images; size {size} is not supported")
        seeds = _seeds(seed, num_images)
        check_candidates(num_candidates, keep_top)
        if num_candidates > 1:
            self.evaluator  # fail before any work if the model has no evaluator
        gen_seeds = candidate_seeds(seeds, num_candidates)  # == seeds when num_candidates == 1

        # 2. Encode prompt and negative prompt (the negative replaces the unconditional branch of guidance).
        cond = self.text_encoder.encode([filtered.rewritten]).to(self.device)
        uncond = self.text_encoder.encode([negative_prompt or ""]).to(self.device)

        # 3.-4. Per-image noise; denoise in fixed-size chunks.
        latents = self._denoise(gen_seeds, cond, uncond, guidance, sampler, steps, batch_size, progress, callback)

        # 5. Decode.
        pixels = decode(self.vae, latents).cpu()

        # 6. Images with their parameters.
        images = self._attach(pixels, gen_seeds, prompt, negative_prompt, steps, sampler, guidance, filtered)

        # 7. Best-of-N: score every candidate against the prompt, keep the best.
        return self._rerank(images, filtered.rewritten, num_candidates, keep_top) if num_candidates > 1 else images

    def _denoise(self, seeds: list[int], cond, uncond, guidance: float, sampler: str, steps: int, batch_size: int,
                 progress: bool, callback, init: torch.Tensor | None = None, strength: float = 1.0,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
        """Latents for `seeds`, denoised in fixed-size chunks (padding keeps every chunk the same shape).
        init/strength start from an image's latents (img2img); keep marks latents kept from `init` (inpainting)."""
        chunk = min(batch_size, len(seeds))
        latents = []
        for start in range(0, len(seeds), chunk):
            chunk_seeds = seeds[start:start + chunk]
            pad = chunk - len(chunk_seeds)
            gens = [torch.Generator("cpu").manual_seed(s) for s in chunk_seeds] + [torch.Generator("cpu").manual_seed(0) for _ in range(pad)]
            x = torch.stack([torch.randn(self.latent_shape, generator=g) for g in gens]).to(self.device)
            c, u = cond[[0] * chunk], uncond[[0] * chunk]
            start_from = None if init is None else init.expand(chunk, *init.shape[1:]).to(self.device)
            known = None if keep is None else (start_from, keep.expand(chunk, *keep.shape[1:]).to(self.device))
            out = sample(self._model_fn(c, u, guidance), x, sampler, steps, self.index["objective"], gens,
                         progress=progress, callback=callback, init=start_from, strength=strength, known=known)
            latents.append(out[:len(chunk_seeds)])
        return torch.cat(latents)

    def _attach(self, pixels: torch.Tensor, seeds: list[int], prompt: str, negative_prompt: str, steps: int,
                sampler: str, guidance: float, filtered: FilterResult, extra: dict | None = None) -> list[Image.Image]:
        images = []
        for img, s in zip(pixels, seeds):
            im = Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB")
            im.info[PARAMS_KEY] = {
                "prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "sampler": sampler,
                "cfg_scale": guidance, "seed": s, "width": self.image_size, "height": self.image_size,
                "model_hash": self.model_hash, "model": self.model_dir.name,
                "dtype": "fp32" if self.unet_dtype == torch.float32 else "bf16",
                "rewritten_prompt": filtered.rewritten, "filter": filtered.mode_requested,
                "filter_explanation": filtered.explanation, **(extra or {}),
            }
            images.append(im)
        return images

    @torch.inference_mode()
    def edit(self, image, prompt: str, mask=None, strength: float | None = None, negative_prompt: str = "",
             num_images: int = 1, steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
             seed: int | Sequence[int] | None = None, batch_size: int = 8, progress: bool = False,
             callback: Callable[[int, int], None] | None = None, filter: str | FilterResult = "offline",
             style: str | None = None, llm=None) -> list[Image.Image]:
        """img2img, or inpainting when `mask` is given (white = repaint, black = keep), of `image` (PIL image or
        path; squared and resized to the model's size). strength: the share of the schedule that runs (default
        0.6 for img2img, 1.0 for inpainting). Inpainting keeps the known latents at every step and returns the
        input's own pixels outside a 3-pixel feathered seam around the mask."""
        from .editing import load_image, load_mask, paste_back

        steps = int(steps if steps is not None else self.defaults.get("steps", 20))
        guidance = float(guidance if guidance is not None else self.defaults.get("guidance", 4.0))
        sampler = sampler or self.defaults.get("sampler", "dpmpp_2m")
        strength = float(strength if strength is not None else (1.0 if mask is not None else 0.6))
        self._check(prompt, num_images, steps, guidance, sampler, batch_size)
        start_index(steps, strength)  # a clear error before any work
        source = load_image(image, self.image_size)
        repaint = load_mask(mask, self.image_size) if mask is not None else None
        filtered = self.filter_prompt(prompt, filter, style=style, llm=llm)
        seeds = _seeds(seed, num_images)
        cond = self.text_encoder.encode([filtered.rewritten]).to(self.device)
        uncond = self.text_encoder.encode([negative_prompt or ""]).to(self.device)
        init = encode(self.vae, source[None])
        keep = None
        if repaint is not None:  # a latent is repainted when any pixel of its patch is
            f = self.image_size // self.latent_shape[-1]
            keep = 1.0 - torch.nn.functional.max_pool2d(repaint[None, None].float(), f)
        latents = self._denoise(seeds, cond, uncond, guidance, sampler, steps, batch_size, progress, callback,
                                init=init, strength=strength, keep=keep)
        pixels = decode(self.vae, latents).cpu()
        if repaint is not None:
            pixels = paste_back(source, pixels, repaint)
        extra = {"mode": "inpaint" if repaint is not None else "img2img", "strength": strength,
                 "init_image_sha256": _sha(source)} | ({"mask_sha256": _sha(repaint)} if repaint is not None else {})
        return self._attach(pixels, seeds, prompt, negative_prompt, steps, sampler, guidance, filtered, extra)

    def vary(self, image, num_images: int = 4, strength: float = 0.6, prompt: str | None = None, **kwargs) -> list[Image.Image]:
        """Variations of `image`: re-noised to `strength` and redrawn with new seeds. Without a prompt the
        evaluator names the image (the most likely of the model's concepts) and that name is the prompt, so the
        variations keep the concept, as Kandinsky's image-embedding variations do."""
        from .editing import load_image

        if prompt is None:
            source = load_image(image, self.image_size)
            names = sorted(self.vocabulary.by_name)
            pil = Image.fromarray(source.permute(1, 2, 0).numpy(), "RGB")
            prompt = names[int(self.evaluator.class_probs([pil], names)[0].argmax())]
        return self.edit(image, prompt, strength=strength, num_images=num_images, **kwargs)

    @property
    def evaluator(self):
        """The model's image evaluator (`model_dir/evaluator`), loaded on first use."""
        if getattr(self, "_evaluator", None) is None:
            from .evaluator.scorer import EVALUATOR_DIR, Evaluator

            folder = self.model_dir / EVALUATOR_DIR
            if not (folder / "config.json").is_file():
                raise MinicreamError(f"{self.model_dir} has no image evaluator ({folder} is missing), so best-of-N "
                                     "cannot rank candidates; use num_candidates=1 or train one with `minicream train-evaluator`")
            self._evaluator = Evaluator.from_pretrained(folder, text_encoder=self.text_encoder)
        return self._evaluator

    def _rerank(self, images: list[Image.Image], prompt: str, n: int, keep: int) -> list[Image.Image]:
        scores = self.evaluator.score(images, prompt)
        best = best_indices(scores, n, keep)
        for i in best:
            images[i].info[PARAMS_KEY].update(score=round(float(scores[i]), 5), num_candidates=n)
        return [images[i] for i in best]


def _seeds(seed, n: int) -> list[int]:
    if seed is None:
        base = random.randrange(2**31)
        return [base + i for i in range(n)]
    # A string is iterable too: seed="12" must not become the seeds [1, 2].
    single = isinstance(seed, numbers.Integral)
    if isinstance(seed, (bool, str, bytes, float)) or not (single or isinstance(seed, Sequence)):
        raise MinicreamError(f"seed must be an integer or a list of integers, got {seed!r}")
    if not single and any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in seed):
        raise MinicreamError(f"seeds must be integers, got {list(seed)!r}")
    seeds = [int(seed) + i for i in range(n)] if single else [int(s) for s in seed]
    if any(not 0 <= s < 2**63 for s in seeds):
        raise MinicreamError(f"seeds must be in 0..2**63-1, got {seeds[0] if single else seeds}")
    if not single and len(seeds) != n:
        raise MinicreamError(f"got {len(seeds)} seeds for {n} images")
    return seeds


def _sha(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def _cat_embeddings(a, b):
    from .text.encoder import TextEmbeddings

    return TextEmbeddings(*(torch.cat([getattr(a, f), getattr(b, f)]) for f in ("hidden", "mask", "pooled", "truncated")))
