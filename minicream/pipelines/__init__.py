"""Pipelines: the shared stages (base.py), the call's sampling settings (settings.py), the guided model function
(guidance.py), the PNG's record (metadata.py), and one file per mode (text2img, img2img, inpaint, outpaint,
variation, blend, scene). `Pipeline.from_pretrained(dir)` loads a model; `pipe(prompt)`, `pipe.edit(...)`,
`pipe.run(mode, ...)`."""
from ..io.model_dir import DEFAULT_MODEL, SHIPPED, default_model_dir, resolve_model, shipped_model_dir
from .base import DTYPES, Pipeline, unet_dtype
from .metadata import PARAMS_KEY, sha
from .modes import Mode, Option, discover
from .settings import MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS, SamplingSettings, seeds_for

Pipeline.modes = discover()

__all__ = ["DEFAULT_MODEL", "DTYPES", "MAX_GUIDANCE", "MAX_IMAGES", "MAX_STEPS", "PARAMS_KEY", "SHIPPED", "Mode", "Option",
           "Pipeline", "SamplingSettings", "default_model_dir", "resolve_model", "seeds_for", "sha", "shipped_model_dir",
           "unet_dtype"]
