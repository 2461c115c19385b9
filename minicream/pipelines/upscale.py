"""The upscale stage: a model's diffusion upscaler (`model_dir/upscaler`, training/upscaler.py) after decoding.

A model with an upscaler draws at its native size and then at `scale` x (256 px for the 64-px models), or at any size
in between (128 px: the 256-px result, downsampled with antialiasing). The upscaler's noise comes from each image's
own seed (offset, so it is not the base model's noise), so `--from` re-runs it bit-identically; its settings
(UpscaleSettings: the options in UPSCALE, each None for the upscaler's own) go into the PNG ("size", "upscale_steps",
"upscale_noise", "upscale_sampler", "upscale_consistent", "upscaler_hash"; a record without a sampler was drawn by
"euler", the only one before, and one without `upscale_consistent` without back-projection).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..diffusion.upscale import SAMPLERS, UpscaleSettings, start_noise
from ..errors import MinicreamError
from ..evaluator.scorer import to_uint8
from ..io.model_dir import UPSCALER_DIR
from ..io.weights import short_hash
from ..models.base import WEIGHTS_NAME
from .metadata import PARAMS_KEY
from .modes import Option

SETTINGS_FILE = "upscaler.json"
SEED_OFFSET = 0x5CA1E  # the upscaler's noise generator: the image's seed plus this
MAX_UPSCALE_INPUT = 256  # `minicream upscale`: inputs up to this side (x4 -> 1024 px)

UPSCALE = (  # the options of a mode that can draw larger than the model's native size
    Option("size", "int", None, "image size in pixels: the model's native size, or with an upscaler twice or four "
                                "times it (e.g. 256)", limits={"ge": 8, "le": 4096}),
    Option("upscale_steps", "int", None, "the upscaler's sampling steps (default: the upscaler's own)",
           limits={"ge": 1, "le": 50}),
    Option("upscale_noise", "float", None, "noise added to the low-resolution image before upscaling (more invents "
                                           "more detail; default: the upscaler's own)", limits={"ge": 0.0, "le": 1.0}),
    Option("upscale_sampler", "str", None, "the upscaler's sampler: euler (the flow's ODE) or euler_a (ancestral: "
                                           "fresh noise every step, crisper); default: the upscaler's own",
           choices=SAMPLERS),
    Option("upscale_consistent", "bool", None, "back-project every step onto the low-resolution picture, so the "
                                               "result downsampled is that picture: detail is added, nothing it "
                                               "shows changes (default: the upscaler's own)"),
)


class LoadedUpscaler:
    """An upscaler folder: the network (fp32, under bf16 autocast where bf16 is fast) and its sampling defaults."""

    def __init__(self, folder: Path, device: torch.device):
        from ..models.upscaler import Upscaler
        from ..precision import fast_bf16

        self.folder = folder
        self.net = Upscaler.from_pretrained(folder).to(device, memory_format=torch.channels_last)
        own = json.loads((folder / SETTINGS_FILE).read_text()) if (folder / SETTINGS_FILE).is_file() else {}
        first = UpscaleSettings()  # what an upscaler.json without a key was sampled with
        self.defaults = UpscaleSettings(int(own.get("steps", first.steps)),
                                        float(own.get("noise_level", first.noise_level)),
                                        str(own.get("sampler", first.sampler)),
                                        bool(own.get("consistent", first.consistent)))
        self.scale = self.net.config.scale
        self.hash = short_hash(folder / WEIGHTS_NAME)
        self.bf16 = fast_bf16(device)

    def settings(self, upscale_steps: int | None = None, upscale_noise: float | None = None,
                 upscale_sampler: str | None = None, upscale_consistent: bool | None = None) -> UpscaleSettings:
        """The sampling settings of a call (the UPSCALE options; None: the upscaler's own), checked."""
        own = self.defaults
        steps = own.steps if upscale_steps is None else upscale_steps
        noise_level = own.noise_level if upscale_noise is None else upscale_noise
        sampler = own.sampler if upscale_sampler is None else upscale_sampler
        consistent = own.consistent if upscale_consistent is None else upscale_consistent
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 50:
            raise MinicreamError(f"upscale_steps must be an integer from 1 to 50, got {steps!r}")
        top = self.net.config.max_noise_level
        if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or not 0 <= noise_level <= top:
            raise MinicreamError(f"upscale_noise must be a number from 0 to {top}, got {noise_level!r}")
        if sampler not in SAMPLERS:
            raise MinicreamError(f"upscale_sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if not isinstance(consistent, bool):
            raise MinicreamError(f"upscale_consistent must be true or false, got {consistent!r}")
        return UpscaleSettings(steps, float(noise_level), sampler, consistent)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, seeds: list[int], settings: UpscaleSettings) -> torch.Tensor:
        """uint8 (N, 3, h, w) -> uint8 (N, 3, h*scale, w*scale); image k's noise from seeds[k] (the starting noise,
        the condition's, then euler_a's fresh noise per step)."""
        from ..diffusion.upscale import sample_upscale
        from ..models.autoencoder import to_uint8, to_unit_range

        out = []
        for img, seed in zip(pixels, seeds):  # one at a time: an image never depends on its batch
            g = torch.Generator().manual_seed(int(seed) + SEED_OFFSET)
            noise, level_noise = start_noise(g, img.shape, self.scale)
            low = to_unit_range(img[None]).float()
            out.append(to_uint8(sample_upscale(self.net, low, noise[None], settings.steps, settings.noise_level,
                                               level_noise[None], self.bf16, settings.sampler, g,
                                               settings.consistent)))
        return torch.cat(out)


def has_upscaler(model_dir: Path) -> bool:
    return (Path(model_dir) / UPSCALER_DIR / "config.json").is_file()


def open_upscaler(model_dir: Path, device: torch.device = torch.device("cpu")) -> LoadedUpscaler:
    """A model folder's upscaler; a one-line error when it has none."""
    if not has_upscaler(model_dir):
        raise MinicreamError(f"{model_dir} has no upscaler ({Path(model_dir) / UPSCALER_DIR} is missing), so it draws "
                             "only its native size; train one with `minicream train-upscaler`")
    return LoadedUpscaler(Path(model_dir) / UPSCALER_DIR, device)


def load(pipe) -> LoadedUpscaler:
    return open_upscaler(pipe.model_dir, pipe.device)


def sizes(pipe) -> list[int]:
    """The output sizes this model offers: its native one, and with an upscaler twice and `scale` times it."""
    native = pipe.image_size
    if not has_upscaler(pipe.model_dir):
        return [native]
    scale = pipe.upscaler.scale
    return sorted({native, 2 * native, scale * native})


def check_size(pipe, size: int | None) -> int:
    """The output size (None = native); refused when the model cannot draw it."""
    if size is None or size == pipe.image_size:
        return pipe.image_size
    offered = sizes(pipe)
    if size not in offered:
        extra = "" if len(offered) > 1 else " (a model with an upscaler also draws larger)"
        raise MinicreamError(f"this model draws {', '.join(f'{s}x{s}' for s in offered)} images; size {size} is not "
                             f"supported{extra}")
    return size


def resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, height, width), antialiased bicubic."""
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    out = F.interpolate(pixels.float(), size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _with_params(pixels: torch.Tensor, params: dict) -> Image.Image:
    """uint8 (3, H, W) -> a PIL image carrying `params` (its size filled in)."""
    im = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    im.info[PARAMS_KEY] = {**params, "width": im.width, "height": im.height}
    return im


def upscale_images(pipe, images: list[Image.Image], size: int, **upscale) -> list[Image.Image]:
    """Generated images (each with its PARAMS_KEY record and seed) at `size` (`upscale`: the UPSCALE options), their
    records updated."""
    if size == pipe.image_size:
        return images
    up = pipe.upscaler
    settings = up.settings(**upscale)
    pixels = to_uint8(images)
    seeds = [int(im.info[PARAMS_KEY]["seed"]) for im in images]
    h, w = pixels.shape[-2:]  # a scene's canvas may be wider than the model's square: the same factor
    big = resize(up(pixels, seeds, settings), h * size // pipe.image_size, w * size // pipe.image_size)
    record = {"size": size, **settings.record(), "upscaler_hash": up.hash}
    return [_with_params(px, {**im.info[PARAMS_KEY], **record}) for im, px in zip(images, big)]


def upscale_any(upscaler: LoadedUpscaler, image, seed: int = 0, **upscale) -> Image.Image:
    """`minicream upscale`: any picture (a PIL image or a path; transparency on white) at `scale` x its size, with
    its settings (`upscale`: the UPSCALE options) in the image's parameters (mode "upscale")."""
    from ..data.images import on_white
    from ..editing import open_image
    from .metadata import sha

    settings = upscaler.settings(**upscale)
    rgb = on_white(open_image(image))
    if max(rgb.size) > MAX_UPSCALE_INPUT:
        raise MinicreamError(f"image {rgb.width}x{rgb.height}: the upscaler takes images up to {MAX_UPSCALE_INPUT} px "
                             f"a side (it is for the models' {MAX_UPSCALE_INPUT // 4}-px pictures)")
    pixels = to_uint8([rgb])
    return _with_params(upscaler(pixels, [seed], settings)[0], {
        "mode": "upscale", "seed": int(seed), **settings.record(), "upscaler_hash": upscaler.hash,
        "init_image_sha256": sha(pixels[0])})


def upscale_edit(pipe, images: list[Image.Image], picture: Image.Image, repaint_mask, size: int,
                 **upscale) -> list[Image.Image]:
    """An edit's results at `size`: upscaled, then, with a mask (inpainting), the input's own pixels at that size
    pasted back outside it, so what the user kept stays as sharp as it was given."""
    from ..editing import load_image, load_mask, paste_back

    if size == pipe.image_size:
        return images
    big = pipe.upscale(images, size, **upscale)
    if repaint_mask is None:
        return big
    source = load_image(picture, size)
    repaint = load_mask(repaint_mask, size, like=picture.size)
    return [_with_params(px, im.info[PARAMS_KEY]) for im, px in zip(big, paste_back(source, to_uint8(big), repaint))]
