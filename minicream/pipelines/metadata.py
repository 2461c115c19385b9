"""What a generated PNG records: the generation parameters (the prompt, the call's SamplingSettings, the seed, the
model and its provenance), kept in `image.info[PARAMS_KEY]` and written into the PNG by `io.pngmeta.save_png`,
so that `minicream generate --from image.png` redraws the image."""
from __future__ import annotations

import torch
from PIL import Image

from ..filter import FilterResult
from ..io.imagefile import pixels_sha as sha  # noqa: F401 (the modes' name for it)
from .settings import SamplingSettings

PARAMS_KEY = "minicream"  # PIL image.info key holding the generation parameters


def provenance(index: dict) -> dict:
    """What a distilled model is and which teacher it came from (model_index.json "distill"), for the PNG."""
    d = index.get("distill")
    if not isinstance(d, dict):
        return {}
    return {"model_kind": str(d.get("what", "distilled")),
            "teacher": f"{d.get('teacher', '?')} ({d.get('teacher_hash', '?')})"}


def attach(pipe, pixels: torch.Tensor, seeds, prompt: str, settings: SamplingSettings, filtered: FilterResult | None,
           extra: dict | None = None) -> list[Image.Image]:
    """uint8 (N, 3, H, W) -> PIL images, each carrying its generation parameters (image k drawn from seeds[k])."""
    images = []
    for img, s in zip(pixels, seeds):
        im = Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB")
        rec = settings.recorded
        im.info[PARAMS_KEY] = {
            "prompt": prompt, "negative_prompt": rec.pop("negative_prompt"), "steps": rec.pop("steps"),
            "sampler": rec.pop("sampler"), "cfg_scale": rec.pop("cfg_scale"), "seed": s,
            "width": im.width, "height": im.height, "model_hash": pipe.model_hash, "model": pipe.model_dir.name,
            "dtype": "fp32" if pipe.unet_dtype == torch.float32 else "bf16",
            **rec,  # the guidance interval and CADS, when on
            **({"rewritten_prompt": filtered.rewritten, "filter": filtered.mode_requested,
                "filter_explanation": filtered.explanation} if filtered is not None else {}),
            **pipe.provenance,
            **({"adapters": pipe.adapter_records} if pipe.adapters else {}),  # name, hash, scale: `--from` checks them
            **(extra or {}),
        }
        images.append(im)
    return images
