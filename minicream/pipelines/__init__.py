"""Pipelines: the shared stages (base.py) and one file per mode (text2img, img2img, inpaint, outpaint, variation,
blend). `Pipeline.from_pretrained(dir)` loads a model; `pipe(prompt)`, `pipe.edit(...)`, `pipe.run(mode, ...)`."""
from .base import (DTYPES, MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS, PARAMS_KEY, Pipeline, default_model_dir, seeds_for,
                   unet_dtype)
from .modes import Mode, Option, discover

Pipeline.modes = discover()

__all__ = ["DTYPES", "MAX_GUIDANCE", "MAX_IMAGES", "MAX_STEPS", "PARAMS_KEY", "Mode", "Option", "Pipeline",
           "default_model_dir", "seeds_for", "unet_dtype"]
