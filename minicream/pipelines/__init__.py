"""Pipelines: the shared stages (base.py) and one file per mode (text2img, img2img, inpaint, outpaint, variation,
blend). `Pipeline.from_pretrained(dir)` loads a model; `pipe(prompt)`, `pipe.edit(...)`, `pipe.run(mode, ...)`."""
from .base import (DEFAULT_MODEL, DTYPES, MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS, PARAMS_KEY, SHIPPED, Pipeline,
                   default_model_dir, resolve_model, seeds_for, shipped_model_dir, unet_dtype)
from .modes import Mode, Option, discover

Pipeline.modes = discover()

__all__ = ["DEFAULT_MODEL", "DTYPES", "MAX_GUIDANCE", "MAX_IMAGES", "MAX_STEPS", "PARAMS_KEY", "SHIPPED", "Mode", "Option",
           "Pipeline", "default_model_dir", "resolve_model", "seeds_for", "shipped_model_dir", "unet_dtype"]
