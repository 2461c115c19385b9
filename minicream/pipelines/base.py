"""The pipeline's stages, shared by every mode (text-to-image, img2img, inpaint, outpaint, variation, blend).

    load            Pipeline.from_pretrained(dir): the model folder (io/model_dir.py), UNet, autoencoder, text encoder
    check           settings(): the model's defaults filled in and every value range-checked
    encode prompt   filter_prompt() (the language filter), encode_prompt()
    prepare latents noise(): one CPU generator per image; or an encoded image noised to `strength` (in denoise)
    denoise         denoise(): fixed-size chunks, classifier-free guidance, MultiDiffusion windows on a larger canvas
    decode          decode()
    attach          attach(): the generation parameters, written into the PNG by `save_png`
    rerank          rerank(): best-of-N by the model's evaluator

Chunks always have the same size (the last one is padded), so an image depends only on its own seed and settings,
never on how many images were asked for together. Modes (the other files of this package) are thin functions over
these stages; `Pipeline.run(mode, **options)` calls one, and `__call__`, `edit`, `vary`, `outpaint` and `blend`
are shortcuts to them.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import numbers
import random
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..diffusion.reflow import network_alphas, velocity_from_v
from ..diffusion.cads import CADS
from ..diffusion.samplers import available_samplers, cfg_model_fn, chunk_callback, sample, start_index
from ..diffusion.tiling import tiled_model_fn
from ..errors import MinicreamError
from ..evaluator.rerank import best_indices
from ..filter import FilterResult
from ..filter.variety import CHOICES, filter_style
from ..io.model_dir import ModelDir
from ..io.weights import short_hash
from ..models.autoencoder import decode, encode, load_autoencoder
from ..models.base import WEIGHTS_NAME
from ..models.build import load_unet
from ..precision import fast_bf16
from ..text.encoder import TextEmbeddings, TextEncoder
from .modes import Mode

MAX_STEPS, MAX_GUIDANCE, MAX_IMAGES = 500, 50.0, 256
PARAMS_KEY = "minicream"  # PIL image.info key holding the generation parameters
# The guidance interval of the mode call in progress (Pipeline.guidance_limit); None outside one.
_MAX_NOISE: contextvars.ContextVar[float | None] = contextvars.ContextVar("guidance_max_noise", default=None)
# The condition-annealing noise scale of the mode call in progress (Pipeline.condition_annealing); None outside one.
_CADS: contextvars.ContextVar[float | None] = contextvars.ContextVar("cads", default=None)
CADS_SEED_OFFSET = 0xCAD5  # CADS noise comes from a generator of its own per image (seed + this), not the latents'
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


# Models shipped inside the package, by name (`Pipeline.from_pretrained("reference")`, `--model reference`).
# "reference": the 30-minute recipe, 61 concepts (the default). "full": `--config full` on every concept in four
# designs, two sittings = 16,203 steps (not the default yet: continue it with `--init-from full`). "onestep": the default
# model distilled to one step by `minicream distill` (reflow, then distillation; its model_index.json names the teacher).
SHIPPED = {"reference": "reference", "full": "full", "onestep": "onestep"}
DEFAULT_MODEL = "reference"


def default_model_dir() -> Path:
    """The shipped default model, inside the installed package."""
    return shipped_model_dir(DEFAULT_MODEL)


def shipped_model_dir(name: str) -> Path:
    return Path(__file__).parent.parent / SHIPPED[name]


def resolve_model(model: str | Path | None) -> Path:
    """None: the default shipped model; a shipped model's name; else a model folder's path."""
    if model is None:
        return default_model_dir()
    if isinstance(model, str) and model in SHIPPED and not Path(model).exists():
        return shipped_model_dir(model)
    return Path(model)


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
    modes: dict[str, Mode] = {}  # every mode file of this package (filled by minicream/pipelines/__init__.py)

    def __init__(self, unet, vae, text_encoder: TextEncoder, model: ModelDir | dict, model_dir: Path | None = None,
                 device: str = "cpu"):
        if isinstance(model, dict):  # (unet, vae, encoder, index, model_dir): the older constructor
            model = ModelDir(Path(model_dir), model)
        self.unet, self.vae, self.text_encoder, self.model = unet, vae, text_encoder, model
        self.index, self.model_dir, self.device = model.index, model.path, torch.device(device)
        # bf16 weights run the UNet without autocast (no per-call weight casts: ~1.15x faster sampling on an AMX
        # CPU); fp32 weights run under bf16 autocast where bf16 is fast, as the UNet was trained.
        self.unet_dtype = next(unet.parameters()).dtype
        self.model_hash = short_hash(model.unet / WEIGHTS_NAME)
        self.latent_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.image_size = model.image_size
        self.defaults = model.defaults
        factor = 2 ** (len(vae.config.block_out_channels) - 1)  # the autoencoder's downsampling
        if self.latent_shape[-1] * factor != self.image_size:
            raise MinicreamError(f"{model.path}: model_index.json says image_size {self.image_size}, but the UNet and "
                                 f"autoencoder draw {self.latent_shape[-1] * factor} px images")

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, device: str = "cpu",
                        dtype: str | torch.dtype | None = "auto") -> "Pipeline":
        """model_dir: a model folder, the name of a shipped model (`SHIPPED`), or None for the default one.
        dtype: the UNet's weights. bf16 (the shipped weights are stored in bf16) runs it without autocast;
        None or "fp32" keeps fp32 weights, under bf16 autocast (the training-time numerics) where bf16 is fast;
        "auto" (default) is bf16 on hardware with fast bf16 (AMX, AVX512-BF16, CUDA) and fp32 elsewhere."""
        dtype = unet_dtype(dtype, device)
        model = ModelDir.open(resolve_model(model_dir))
        unet = load_unet(model.unet).to(device, dtype=dtype, memory_format=torch.channels_last)
        vae = load_autoencoder(model.vae).to(device)
        te = model.text_encoder
        encoder = TextEncoder.load(None if te["name"] == "minilm" else te["name"], max_length=te["max_length"], device=device)
        return cls(unet, vae, encoder, model, device=device)

    def compile(self, warmup: bool = True) -> "Pipeline":
        """torch.compile the UNet (once: `minicream serve --compile`); with `warmup`, draw one image now so the
        compilation happens at start-up, not in the first request."""
        self.unet = torch.compile(self.unet)
        if warmup:
            self("warm-up", num_images=1, seed=0, filter="none")
        return self

    # -- modes ----------------------------------------------------------------------------------------
    def run(self, mode: str, **options) -> list[Image.Image]:
        """Run one mode (`Pipeline.modes`) with its declared options."""
        if mode not in self.modes:
            raise MinicreamError(f"unknown mode {mode!r}; choose one of: {', '.join(self.modes)}")
        with torch.inference_mode():  # not only no_grad: no version counters or view tracking (1.15x faster sampling)
            return self.modes[mode](self, **options)

    def __call__(self, prompt: str, **options) -> list[Image.Image]:
        """Text to image; see `Pipeline.modes["text2img"].options`."""
        return self.run("text2img", prompt=prompt, **options)

    def edit(self, image, prompt: str, mask=None, **options) -> list[Image.Image]:
        """img2img, or inpainting when `mask` is given (white, or transparent, = repaint)."""
        if mask is None:
            return self.run("img2img", image=image, prompt=prompt, **options)
        return self.run("inpaint", image=image, prompt=prompt, mask=mask, **options)

    def vary(self, image, **options) -> list[Image.Image]:
        return self.run("variation", image=image, **options)

    def outpaint(self, image, prompt: str, **options) -> list[Image.Image]:
        return self.run("outpaint", image=image, prompt=prompt, **options)

    def blend(self, a, b, **options) -> list[Image.Image]:
        return self.run("blend", a=a, b=b, **options)

    @cached_property
    def network_alphas(self) -> torch.Tensor:
        return network_alphas(self.index["objective"]["network"])

    @property
    def samplers(self) -> list[str]:
        return available_samplers(self.index["objective"]["prediction_type"])

    @contextlib.contextmanager
    def _call_option(self, var: contextvars.ContextVar, name: str, value, default: float, ok, interval: str):
        """Within it, `var` holds `value`; None keeps the enclosing call's value, else the model's default (`name`
        in model_index.json "sample"), else `default`. The value must be a number for which ok(value) holds."""
        if value is None:
            value = var.get()
        if value is None:
            value = self.defaults.get(name, default)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(value):
            raise MinicreamError(f"{name} must be a number in {interval}, got {value!r}")
        token = var.set(float(value))
        try:
            yield
        finally:
            var.reset(token)

    def guidance_limit(self, max_noise: float | None):
        """Within it, guidance applies only at noise levels t / T <= `max_noise` (0 < max_noise <= 1; 1 = every
        step). None keeps the enclosing call's value, else the model's default ("guidance_max_noise" in
        model_index.json "sample"), else 1. Every mode call runs inside one (see Mode.__call__)."""
        return self._call_option(_MAX_NOISE, "guidance_max_noise", max_noise, 1.0, lambda v: 0.0 < v <= 1.0, "(0, 1]")

    def condition_annealing(self, scale: float | None):
        """Within it, the conditioning is noised at high noise levels with scale `scale` (CADS, diffusion/cads.py;
        0 = off). None keeps the enclosing call's value, else the model's default ("cads" in model_index.json
        "sample"), else 0. Every mode call runs inside one (see Mode.__call__)."""
        return self._call_option(_CADS, "cads", scale, 0.0, lambda v: 0.0 <= v <= 10.0, "[0, 10]")

    @property
    def cads(self) -> float:
        """The condition-annealing scale in effect (the call's, else the model's default, else 0 = off)."""
        value = _CADS.get()
        return float(self.defaults.get("cads", 0.0)) if value is None else value

    @property
    def guidance_max_noise(self) -> float:
        """The guidance interval in effect (the call's, else the model's default)."""
        value = _MAX_NOISE.get()
        return float(self.defaults.get("guidance_max_noise", 1.0)) if value is None else value

    # -- check ----------------------------------------------------------------------------------------
    def settings(self, steps, guidance, sampler, num_images: int = 1, batch_size: int = 8) -> tuple[int, float, str]:
        """The model's defaults for what is None, every value range-checked before any work."""
        steps = steps if steps is not None else self.defaults.get("steps", 20)
        guidance = guidance if guidance is not None else self.defaults.get("guidance", 4.0)
        sampler = sampler or self.defaults.get("sampler", "dpmpp_2m")
        for name, value, kind in (("steps", steps, numbers.Integral), ("num_images", num_images, numbers.Integral),
                                  ("batch_size", batch_size, numbers.Integral), ("guidance", guidance, numbers.Real)):
            if isinstance(value, bool) or not isinstance(value, kind):
                raise MinicreamError(f"{name} must be a number, got {value!r}")
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
        return int(steps), float(guidance), sampler

    def edit_settings(self, steps, guidance, sampler, num_images: int, batch_size: int, strength) -> tuple[int, float, str]:
        """settings() for a mode that starts from an image noised to `strength` (img2img, inpaint, variation). With the
        model's default steps too few for any step to run at that strength (a one-step model at 0.6), the schedule
        gets as many steps as make one run, from the noise level nearest `strength`; steps given explicitly are kept
        (and refused with a clear message if none would run)."""
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 < strength <= 1.0:
            raise MinicreamError(f"strength must be in (0, 1] (a number), got {strength!r}")
        given = steps is not None
        steps, guidance, sampler = self.settings(steps, guidance, sampler, num_images, batch_size)
        while not given and int(steps * strength) < 1 and steps < MAX_STEPS:
            steps += 1
        start_index(steps, strength)  # a clear error before any work
        return steps, guidance, sampler

    @staticmethod
    def check_prompt(prompt) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise MinicreamError("prompt is empty; describe what to draw, e.g. \"red apple\"")

    # -- encode prompt --------------------------------------------------------------------------------
    @cached_property
    def vocabulary(self):
        """The model's concepts for the language filter (concepts.json, else vocabulary.json), loaded once."""
        from ..filter import load_vocabulary

        return load_vocabulary(self.model_dir)

    def filter_prompt(self, prompt: str, filter: str | FilterResult = "offline", style: str | None = None,
                      llm=None) -> FilterResult:
        """Run the language filter ("offline", "llm" or "none"; see minicream.filter) on `prompt`.

        A FilterResult passed as `filter` (e.g. rebuilt from a PNG's metadata) is used as it is, so a re-run
        reads exactly the text the original run read."""
        from ..filter import rewrite

        if isinstance(filter, FilterResult):
            if filter.prompt != prompt:
                raise MinicreamError("the given FilterResult was made for another prompt")
            return filter
        vocab = None if filter == "none" else self.vocabulary
        return rewrite(prompt, filter, vocab, style=filter_style(self.resolve_style(style)), encoder=self.text_encoder, llm=llm)

    def resolve_style(self, style: str | None) -> str | None:
        """The style option in effect: the call's, else the model's default ("style" in model_index.json "sample"),
        else None (no design added). "vary" and "model" are kept as they are (filter/variety.py)."""
        if style is None:
            style = self.defaults.get("style") or None
        if style is not None and (not isinstance(style, str) or not style.strip()):
            raise MinicreamError(f"style must be a design name, \"vary\" or \"model\", got {style!r}")
        if style is not None and style.strip().lower() in CHOICES:
            return style.strip().lower()
        return style

    def encode_prompt(self, texts: str | Sequence[str]) -> TextEmbeddings:
        """Each distinct prompt encoded alone: its embedding must not depend on the other prompts of the batch (the
        encoder's batch runs to the longest prompt, and CPU kernels round differently with the batch's shape)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return self.text_encoder.encode(texts).to(self.device)
        parts = {t: self.text_encoder.encode([t]) for t in dict.fromkeys(texts)}
        fields = ("hidden", "mask", "pooled", "truncated")
        return TextEmbeddings(*(torch.cat([getattr(parts[t], f) for t in texts]) for f in fields)).to(self.device)

    # -- prepare latents ------------------------------------------------------------------------------
    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        f = self.image_size // self.latent_shape[-1]
        if height % f or width % f:
            raise MinicreamError(f"image sizes must be multiples of {f} pixels, got {width}x{height}")
        return height // f, width // f

    @staticmethod
    def noise(seeds: Sequence[int], shape: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """One CPU generator per image (seeded by the image's own seed) and its unit-variance noise."""
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens]), gens

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> latents (the posterior mean)."""
        return encode(self.vae, pixels.to(self.device))

    # -- denoise --------------------------------------------------------------------------------------
    def model_fn(self, cond: TextEmbeddings, uncond: TextEmbeddings, guidance: float,
                 generators: Sequence[torch.Generator] | None = None) -> Callable:
        """The UNet as model_fn(x, t) for the samplers, with classifier-free guidance; cond/uncond have x's batch.
        With condition annealing on (self.cads > 0), the conditional rows are noised at high noise levels, with noise
        from `generators` (one per row)."""
        half = self.unet_dtype != torch.float32
        T = self.index["objective"].get("num_train_timesteps", 1000)
        cads = CADS(self.cads)

        def unet_fn(x, t, emb):
            x = x.to(self.unet_dtype).contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=not half and fast_bf16(self.device)):
                return self.unet(x, t, emb.hidden.to(self.unet_dtype), emb.mask, emb.pooled).float()

        if self.index["objective"].get("network"):  # a flow model whose network predicts v (minicream distill)
            net_fn = unet_fn

            def unet_fn(x, t, emb):  # noqa: F811 - the same call, as the flow's velocity (diffusion/reflow.py)
                return velocity_from_v(lambda xv, tv: net_fn(xv, tv, emb), self.network_alphas)(x, t)

        if cads.scale > 0:
            if generators is None or len(generators) != len(cond):
                raise MinicreamError("condition annealing needs one generator per image")
            clean_fn = unet_fn

            def unet_fn(x, t, emb):  # noqa: F811 - the same call, its conditional rows noised (CADS)
                t_frac = float(t.max()) / T
                if cads.gamma(t_frac) >= 1.0:
                    return clean_fn(x, t, emb)
                n = len(cond)
                rows = slice(len(emb) - n, None)  # the conditional rows: all of them, or the second half with uncond
                draw = lambda like: torch.stack([torch.randn(like.shape[1:], generator=g) for g in generators])
                hidden, pooled = emb.hidden.clone(), emb.pooled.clone()
                hidden[rows] = cads.perturb(hidden[rows], t_frac, draw(hidden[rows]).to(hidden.device), emb.mask[rows])
                pooled[rows] = cads.perturb(pooled[rows], t_frac, draw(pooled[rows]).to(pooled.device))
                return clean_fn(x, t, TextEmbeddings(hidden, emb.mask, pooled, emb.truncated))

        if guidance == 1.0:
            return lambda x, t: unet_fn(x, t, cond)
        both = _cat_embeddings(uncond, cond)
        return cfg_model_fn(lambda x, t: unet_fn(x, t, both), guidance, self.guidance_max_noise,
                            cond_fn=lambda x, t: unet_fn(x, t, cond), num_train_timesteps=T)

    def canvas_model_fn(self, cond: TextEmbeddings, uncond: TextEmbeddings, guidance: float, canvas: tuple[int, int],
                        generators: Sequence[torch.Generator] | None = None) -> Callable:
        """model_fn over latents of size `canvas`: the UNet itself at its native size, MultiDiffusion windows
        of the native size on a larger canvas. cond/uncond: one row per image."""
        native = tuple(self.latent_shape[-2:])
        if tuple(canvas) == native:
            return self.model_fn(cond, uncond, guidance, generators)
        probe = tiled_model_fn(lambda x, t: x, canvas, native)
        rows = [i for i in range(len(cond)) for _ in range(probe.n_windows)]
        gens = None if generators is None else [generators[i] for i in rows]  # a window's noise from its image's
        return tiled_model_fn(self.model_fn(cond[rows], uncond[rows], guidance, gens), canvas, native)

    def denoise(self, seeds: list[int], cond: TextEmbeddings, uncond: TextEmbeddings, guidance: float, sampler: str,
                steps: int, batch_size: int = 8, progress: bool = False, callback=None, init: torch.Tensor | None = None,
                strength: float = 1.0, keep: torch.Tensor | None = None, canvas: tuple[int, int] | None = None,
                noise: torch.Tensor | None = None, step_callback=None) -> torch.Tensor:
        """Latents for `seeds`, denoised in fixed-size chunks (padding keeps every chunk the same shape).

        cond/uncond: one row for all images, or one per image. init/strength: start from latents (img2img);
        keep: 1 where latents are kept from `init` (inpainting, outpainting); canvas: the latent size (H, W)
        (default: the model's); noise: the starting noise per image instead of drawing it from the seeds.
        callback(step, total): progress after every step. step_callback(step, t, x) -> x or None: after every step
        of every chunk, the chunk's latents x (its images in order, unit variance, clean after the last step) and
        the timestep t the step started at; a tensor it returns replaces them (diffusers' callback_on_step_end)."""
        total = steps - (0 if init is None else start_index(steps, strength))
        canvas = tuple(canvas or self.latent_shape[-2:])
        shape = (self.latent_shape[0], *canvas)
        chunk = min(batch_size, len(seeds))
        latents = []
        for start in range(0, len(seeds), chunk):
            rows = list(range(start, min(start + chunk, len(seeds))))
            padded = rows + [rows[-1]] * (chunk - len(rows))
            x, gens = self.noise([seeds[r] for r in padded], shape)
            if noise is not None:
                x = noise[padded].to(x.dtype)
            c = cond[padded if len(cond) > 1 else [0] * chunk]
            u = uncond[padded if len(uncond) > 1 else [0] * chunk]
            start_from = None if init is None else init[padded if len(init) > 1 else [0] * chunk].to(self.device)
            known = None if keep is None else (start_from, keep.expand(chunk, *keep.shape[1:]).to(self.device))
            cads_gens = [torch.Generator("cpu").manual_seed((int(seeds[r]) + CADS_SEED_OFFSET) % 2 ** 63) for r in padded] \
                if self.cads > 0 else None
            out = sample(self.canvas_model_fn(c, u, guidance, canvas, cads_gens), x.to(self.device), sampler, steps,
                         self.index["objective"], gens, progress=progress, init=start_from, strength=strength,
                         known=known, callback=chunk_callback(callback, step_callback, total, len(rows)))
            latents.append(out[:len(rows)])
        return torch.cat(latents)

    # -- decode, attach, rerank -----------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(latents).all():  # broken weights would give an all-black PNG and exit 0
            raise MinicreamError(f"{self.model_dir}: the model produced NaN or infinite values; its weights are broken "
                                 "(re-export or retrain it)")
        return decode(self.vae, latents).cpu()

    def attach(self, pixels: torch.Tensor, seeds: list[int], prompt: str, negative_prompt: str, steps: int,
               sampler: str, guidance: float, filtered: FilterResult | None, extra: dict | None = None) -> list[Image.Image]:
        images = []
        for img, s in zip(pixels, seeds):
            im = Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB")
            im.info[PARAMS_KEY] = {
                "prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "sampler": sampler,
                "cfg_scale": guidance, "seed": s, "width": im.width, "height": im.height,
                "model_hash": self.model_hash, "model": self.model_dir.name,
                "dtype": "fp32" if self.unet_dtype == torch.float32 else "bf16",
                **({"guidance_max_noise": self.guidance_max_noise} if self.guidance_max_noise < 1.0 else {}),
                **({"cads": self.cads} if self.cads > 0 else {}),
                **({"rewritten_prompt": filtered.rewritten, "filter": filtered.mode_requested,
                    "filter_explanation": filtered.explanation} if filtered is not None else {}),
                **self.provenance,
                **(extra or {}),
            }
            images.append(im)
        return images

    @cached_property
    def provenance(self) -> dict:
        """What a distilled model is and which teacher it came from (model_index.json "distill"), for the PNG."""
        d = self.index.get("distill")
        if not isinstance(d, dict):
            return {}
        return {"model_kind": str(d.get("what", "distilled")),
                "teacher": f"{d.get('teacher', '?')} ({d.get('teacher_hash', '?')})"}

    @property
    def evaluator(self):
        """The model's image evaluator (`model_dir/evaluator`), loaded on first use."""
        if getattr(self, "_evaluator", None) is None:
            from ..evaluator.scorer import Evaluator

            if not self.model.has(self.model.evaluator):
                raise MinicreamError(f"{self.model_dir} has no image evaluator ({self.model.evaluator} is missing), so best-of-N "
                                     "cannot rank candidates; use num_candidates=1 or train one with `minicream train-evaluator`")
            self._evaluator = Evaluator.from_pretrained(self.model.evaluator, text_encoder=self.text_encoder)
        return self._evaluator

    def rerank(self, images: list[Image.Image], prompt: str, n: int, keep: int) -> list[Image.Image]:
        scores = self.evaluator.score(images, prompt)
        best = best_indices(scores, n, keep)
        for i in best:
            images[i].info[PARAMS_KEY].update(score=round(float(scores[i]), 5), num_candidates=n)
        return [images[i] for i in best]

    def name_image(self, pixels: torch.Tensor) -> str:
        """The most likely of the model's concepts for a uint8 (3, H, W) image, by the evaluator."""
        names = sorted(self.vocabulary.by_name)
        pil = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
        return names[int(self.evaluator.class_probs([pil], names)[0].argmax())]



def seeds_for(seed, n: int) -> list[int]:
    """Per-image seeds: `seed`, seed+1, ... (random when None), or one given seed per image."""
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


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def _cat_embeddings(a: TextEmbeddings, b: TextEmbeddings) -> TextEmbeddings:
    return TextEmbeddings(*(torch.cat([getattr(a, f), getattr(b, f)]) for f in ("hidden", "mask", "pooled", "truncated")))
