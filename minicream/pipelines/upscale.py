"""The upscale stage: a model's diffusion upscaler (`model_dir/upscaler`, training/upscaler.py) after decoding.

A model with an upscaler draws at its native size and then at `scale` x (256 px for the 64-px models), or at any size
in between (128 px: the 256-px result, downsampled with antialiasing). The upscaler's noise comes from each image's
own seed (offset, so it is not the base model's noise), so `--from` re-runs it bit-identically; its settings go into
the PNG ("size", "upscale_steps", "upscale_noise", "upscale_sampler", "upscaler_hash"; a record without a sampler was
drawn by "euler", the only one before).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..diffusion.upscale import SAMPLERS
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
)


class LoadedUpscaler:
    """An upscaler folder: the network (fp32, under bf16 autocast where bf16 is fast) and its sampling defaults."""

    def __init__(self, folder: Path, device: torch.device):
        from ..models.upscaler import Upscaler
        from ..precision import fast_bf16

        self.folder = folder
        self.net = Upscaler.from_pretrained(folder).to(device, memory_format=torch.channels_last)
        settings = json.loads((folder / SETTINGS_FILE).read_text()) if (folder / SETTINGS_FILE).is_file() else {}
        self.steps = int(settings.get("steps", 4))
        self.noise_level = float(settings.get("noise_level", 0.0))
        self.sampler = str(settings.get("sampler", "euler"))
        self.scale = self.net.config.scale
        self.hash = short_hash(folder / WEIGHTS_NAME)
        self.bf16 = fast_bf16(device)

    def settings(self, steps: int | None, noise_level: float | None,
                 sampler: str | None = None) -> tuple[int, float, str]:
        """The sampling settings of a call (None: the upscaler's own), checked."""
        steps = self.steps if steps is None else steps
        noise_level = self.noise_level if noise_level is None else noise_level
        sampler = self.sampler if sampler is None else sampler
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 50:
            raise MinicreamError(f"upscale_steps must be an integer from 1 to 50, got {steps!r}")
        top = self.net.config.max_noise_level
        if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or not 0 <= noise_level <= top:
            raise MinicreamError(f"upscale_noise must be a number from 0 to {top}, got {noise_level!r}")
        if sampler not in SAMPLERS:
            raise MinicreamError(f"upscale_sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        return steps, float(noise_level), sampler

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, seeds: list[int], steps: int, noise_level: float,
                 sampler: str = "euler") -> torch.Tensor:
        """uint8 (N, 3, h, w) -> uint8 (N, 3, h*scale, w*scale); image k's noise from seeds[k] (the starting noise,
        the condition's, then euler_a's fresh noise per step)."""
        from ..diffusion.upscale import sample_upscale
        from ..models.autoencoder import to_uint8, to_unit_range

        out = []
        for img, seed in zip(pixels, seeds):  # one at a time: an image never depends on its batch
            g = torch.Generator().manual_seed(int(seed) + SEED_OFFSET)
            h, w = img.shape[-2:]
            noise = torch.randn((1, 3, h * self.scale, w * self.scale), generator=g)
            level_noise = torch.randn((1, 3, h, w), generator=g)
            low = to_unit_range(img[None]).float()
            out.append(to_uint8(sample_upscale(self.net, low, noise, steps, noise_level, level_noise, self.bf16,
                                               sampler, g)))
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


def upscale_images(pipe, images: list[Image.Image], size: int, steps: int | None = None,
                   noise_level: float | None = None, sampler: str | None = None) -> list[Image.Image]:
    """Generated images (each with its PARAMS_KEY record and seed) at `size`, their records updated."""
    if size == pipe.image_size:
        return images
    up = pipe.upscaler
    steps, noise_level, sampler = up.settings(steps, noise_level, sampler)
    pixels = to_uint8(images)
    seeds = [int(im.info[PARAMS_KEY]["seed"]) for im in images]
    h, w = pixels.shape[-2:]  # a scene's canvas may be wider than the model's square: the same factor
    big = resize(up(pixels, seeds, steps, noise_level, sampler), h * size // pipe.image_size,
                 w * size // pipe.image_size)
    settings = {"size": size, "upscale_steps": steps, "upscale_noise": noise_level, "upscale_sampler": sampler,
                "upscaler_hash": up.hash}
    return [_with_params(px, {**im.info[PARAMS_KEY], **settings}) for im, px in zip(images, big)]


def upscale_any(upscaler: LoadedUpscaler, image, seed: int = 0, steps: int | None = None,
                noise_level: float | None = None, sampler: str | None = None) -> Image.Image:
    """`minicream upscale`: any picture (a PIL image or a path; transparency on white) at `scale` x its size, with
    its settings in the image's parameters (mode "upscale")."""
    from ..data.images import on_white
    from ..editing import open_image
    from .metadata import sha

    steps, noise_level, sampler = upscaler.settings(steps, noise_level, sampler)
    rgb = on_white(open_image(image))
    if max(rgb.size) > MAX_UPSCALE_INPUT:
        raise MinicreamError(f"image {rgb.width}x{rgb.height}: the upscaler takes images up to {MAX_UPSCALE_INPUT} px "
                             f"a side (it is for the models' {MAX_UPSCALE_INPUT // 4}-px pictures)")
    pixels = to_uint8([rgb])
    return _with_params(upscaler(pixels, [seed], steps, noise_level, sampler)[0], {
        "mode": "upscale", "seed": int(seed), "upscale_steps": steps, "upscale_noise": noise_level,
        "upscale_sampler": sampler, "upscaler_hash": upscaler.hash, "init_image_sha256": sha(pixels[0])})


def upscale_edit(pipe, images: list[Image.Image], picture: Image.Image, repaint_mask, size: int, steps: int | None,
                 noise_level: float | None, sampler: str | None = None) -> list[Image.Image]:
    """An edit's results at `size`: upscaled, then, with a mask (inpainting), the input's own pixels at that size
    pasted back outside it, so what the user kept stays as sharp as it was given."""
    from ..editing import load_image, load_mask, paste_back

    if size == pipe.image_size:
        return images
    big = pipe.upscale(images, size, steps, noise_level, sampler)
    if repaint_mask is None:
        return big
    source = load_image(picture, size)
    repaint = load_mask(repaint_mask, size, like=picture.size)
    return [_with_params(px, im.info[PARAMS_KEY]) for im, px in zip(big, paste_back(source, to_uint8(big), repaint))]
