"""The pipeline's stages, shared by every mode (text-to-image, img2img, inpaint, outpaint, variation, blend).

    load            Pipeline.from_pretrained(dir): the model folder (io/model_dir.py), UNet, autoencoder, text encoder
    check           SamplingSettings.build() (settings.py), once per call in run(): the model's defaults filled in,
                    every value range-checked
    encode prompt   filter_prompt() (the language filter), encode_prompt()
    prepare latents noise(): one CPU generator per image; or an encoded image noised to `strength` (in denoise)
    denoise         denoise(): fixed-size chunks; model_fn (guidance.py): classifier-free guidance, CADS,
                    MultiDiffusion windows on a larger canvas
    decode          decode()
    attach          attach() (metadata.py): the generation parameters, written into the PNG by `save_png`
    rerank          rerank(): best-of-N by the model's evaluator
    upscale         upscale(): the model's diffusion upscaler to a larger size (upscale.py), when one is asked for

Chunks always have the same size (the last one is padded), so an image depends only on its own seed and settings,
never on how many images were asked for together. Modes (the other files of this package) are thin functions over
these stages; `Pipeline.run(mode, **options)` builds the call's SamplingSettings and calls one, and `__call__`,
`edit`, `vary`, `outpaint` and `blend` are shortcuts to it.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ..adapters.use import AdapterMixin, keep_tokens
from ..diffusion.reflow import network_alphas
from ..diffusion.samplers import available_samplers, chunk_callback, sample, start_index
from ..errors import MinicreamError
from ..evaluator.rerank import best_indices
from ..filter import FilterResult
from ..filter.variety import CHOICES, filter_style
from ..io.model_dir import ModelDir, resolve_model
from ..io.weights import short_hash
from ..models.autoencoder import decode, encode, load_autoencoder
from ..models.base import WEIGHTS_NAME
from ..models.build import load_unet
from ..precision import fast_bf16
from ..text.encoder import TextEmbeddings, TextEncoder
from . import metadata
from .guidance import cads_generators, canvas_model_fn, guided_model_fn
from .metadata import PARAMS_KEY
from .modes import Mode
from .settings import SamplingSettings

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


class Pipeline(AdapterMixin):  # load_adapter, set_adapters, unload_adapter (adapters/use.py)
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
        """Run one mode (`Pipeline.modes`) with its declared options: the sampling options become the call's
        SamplingSettings (built and checked here, once); the mode's function gets them and its own options."""
        if mode not in self.modes:
            raise MinicreamError(f"unknown mode {mode!r}; choose one of: {', '.join(self.modes)}")
        m = self.modes[mode]
        sampling, own = m.split(options, self.defaults)
        for name, value in m.sampling_defaults(self, own).items():
            sampling[name] = value if sampling.get(name) is None else sampling[name]
        settings = self.sampling_settings(**sampling, strength=own.get("strength"))
        with torch.inference_mode():  # not only no_grad: no version counters or view tracking (1.15x faster sampling)
            return m.run(self, settings, **own)

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

    def story(self, scenes: Sequence[str], **options) -> list[Image.Image]:
        """One image per scene prompt, every recurring object drawn once and kept the same in each (story.py)."""
        from .story import split_scenes

        return self.run("story", scenes="\n".join(split_scenes(scenes)), **options)

    def fuse(self, parts: Sequence, weights: Sequence[float] | None = None, **options) -> list[Image.Image]:
        """Images and texts mixed by `weights` in the image-embedding space, drawn through the image-prompt adapter
        (fuse.py)."""
        return self.run("fuse", parts=list(parts), weights=None if weights is None else list(weights), **options)

    @cached_property
    def network_alphas(self) -> torch.Tensor:
        return network_alphas(self.index["objective"]["network"])

    @property
    def samplers(self) -> list[str]:
        return available_samplers(self.index["objective"]["prediction_type"])

    @property
    def cads(self) -> float:
        """The model's default condition-annealing scale ("cads" in model_index.json "sample", else 0 = off)."""
        return float(self.defaults.get("cads", 0.0))

    @property
    def guidance_max_noise(self) -> float:
        """The model's default guidance interval ("guidance_max_noise" in model_index.json "sample", else 1)."""
        return float(self.defaults.get("guidance_max_noise", 1.0))

    # -- check ----------------------------------------------------------------------------------------
    def sampling_settings(self, **options) -> SamplingSettings:
        """SamplingSettings.build with this model's defaults and samplers (see settings.py for the options)."""
        return SamplingSettings.build(self.defaults, self.samplers, **options)

    def settings(self, steps, guidance, sampler, num_images: int = 1, batch_size: int = 8) -> tuple[int, float, str]:
        """(steps, guidance, sampler): the model's defaults for what is None, range-checked; for direct `denoise`
        calls (distillation, benchmarks). Modes get the whole SamplingSettings from `run`."""
        s = self.sampling_settings(steps=steps, guidance=guidance, sampler=sampler, num_images=num_images,
                                   batch_size=batch_size, seed=0)
        return s.steps, s.guidance, s.sampler

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
        return keep_tokens(self.adapter_tokens, prompt, lambda text: rewrite(  # a loaded adapter's token passes untouched
            text, filter, vocab, style=filter_style(self.resolve_style(style)), encoder=self.text_encoder, llm=llm), filter)

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
                 generators: Sequence[torch.Generator] | None = None, max_noise: float = 1.0,
                 cads: float = 0.0) -> Callable:
        """The UNet as model_fn(x, t) for the samplers, with classifier-free guidance below noise level `max_noise`
        and condition annealing at scale `cads` (guidance.py); cond/uncond have x's batch."""
        return guided_model_fn(self, cond, uncond, guidance, generators, max_noise, cads)

    def denoise(self, seeds: Sequence[int], cond: TextEmbeddings, uncond: TextEmbeddings, guidance: float, sampler: str,
                steps: int, batch_size: int = 8, progress: bool = False, callback=None, init: torch.Tensor | None = None,
                strength: float = 1.0, keep: torch.Tensor | None = None, canvas: tuple[int, int] | None = None,
                noise: torch.Tensor | None = None, step_callback=None, guidance_max_noise: float = 1.0,
                cads: float = 0.0, control=None, image=None) -> torch.Tensor:
        """Latents for `seeds`, denoised in fixed-size chunks (padding keeps every chunk the same shape).

        Every sampling setting is an argument (a mode passes its SamplingSettings' `denoise_args`); the ones left
        out are the plain sampler's: guidance at every step (guidance_max_noise 1), no condition annealing (cads 0).
        cond/uncond: one row for all images, or one per image. init/strength: start from latents (img2img);
        keep: 1 where latents are kept from `init` (inpainting, outpainting); canvas: the latent size (H, W)
        (default: the model's); noise: the starting noise per image instead of drawing it from the seeds;
        control: the call's ControlNets and hints (control/use.py's build_control), the same for every image;
        image: the call's image prompts (image_prompt/use.py's ImagePrompt), the same for every image.
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
            model_fn = canvas_model_fn(self, c, u, guidance, canvas, cads_generators([seeds[r] for r in padded], cads),
                                       guidance_max_noise, cads, control, None if image is None else image.select(padded))
            out = sample(model_fn, x.to(self.device), sampler, steps, self.index["objective"], gens, progress=progress,
                         init=start_from, strength=strength, known=known,
                         callback=chunk_callback(callback, step_callback, total, len(rows)))
            latents.append(out[:len(rows)])
        return torch.cat(latents)

    # -- decode, attach, rerank -----------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(latents).all():  # broken weights would give an all-black PNG and exit 0
            raise MinicreamError(f"{self.model_dir}: the model produced NaN or infinite values; its weights are broken "
                                 "(re-export or retrain it)")
        return decode(self.vae, latents).cpu()

    def attach(self, pixels: torch.Tensor, seeds: Sequence[int], prompt: str, settings: SamplingSettings,
               filtered: FilterResult | None, extra: dict | None = None) -> list[Image.Image]:
        """PIL images carrying their generation parameters (metadata.py)."""
        return metadata.attach(self, pixels, seeds, prompt, settings, filtered, extra)

    @cached_property
    def provenance(self) -> dict:
        return metadata.provenance(self.index)

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

    def rerank(self, images: list[Image.Image], prompt: str | None, n: int, keep: int,
               target: torch.Tensor | None = None) -> list[Image.Image]:
        """The best `keep` of every `n` candidates by the evaluator: their cosine with the prompt, or with `target`, an
        image embedding (an image prompt's)."""
        if target is None:
            scores = self.evaluator.score(images, prompt)
        else:
            scores = self.evaluator.image_features(images) @ target.float()
        best = best_indices(scores, n, keep)
        for i in best:
            images[i].info[PARAMS_KEY].update(score=round(float(scores[i]), 5), num_candidates=n)
        return [images[i] for i in best]

    @property
    def control_kinds(self) -> list[str]:
        """The ControlNets this model has (its folder's control/<kind>/; control/use.py)."""
        from ..control.use import kinds

        return kinds(self)

    @property
    def has_image_prompt(self) -> bool:
        """Whether this model has an image-prompt adapter (its folder's image_prompt/; image_prompt/use.py)."""
        from ..image_prompt.use import has_image_prompt

        return has_image_prompt(self)

    @property
    def has_prior(self) -> bool:
        """Whether this model has a prior with its adapter (image_prompt/prior/; image_prompt/prior.py)."""
        from ..image_prompt.prior import has_prior

        return self.has_image_prompt and has_prior(self)

    # -- upscale --------------------------------------------------------------------------------------
    @cached_property
    def upscaler(self):
        """The model's diffusion upscaler (`model_dir/upscaler`, upscale.py), loaded on first use."""
        from .upscale import load

        return load(self)

    @property
    def sizes(self) -> list[int]:
        """The output sizes this model draws: its native one, and larger ones with an upscaler."""
        from .upscale import sizes

        return sizes(self)

    def upscale(self, images: list[Image.Image], size: int, **upscale) -> list[Image.Image]:
        """Generated images (native size, with their parameters) at `size` (one of `sizes`) by the upscaler;
        `upscale`: its options (upscale_steps, upscale_noise, upscale_sampler, upscale_consistent; None or left
        out: the upscaler's own)."""
        from .upscale import check_size, upscale_images

        return upscale_images(self, images, check_size(self, size), **upscale)

    def name_image(self, pixels: torch.Tensor) -> str:
        """The most likely of the model's concepts for a uint8 (3, H, W) image, by the evaluator."""
        names = sorted(self.vocabulary.by_name)
        pil = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
        return names[int(self.evaluator.class_probs([pil], names)[0].argmax())]
