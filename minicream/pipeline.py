"""`from minicream.pipeline import Pipeline`: the pipeline lives in `minicream/pipelines/` (one file per mode)."""
from .pipelines import (DTYPES, MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS, PARAMS_KEY, Pipeline, default_model_dir,  # noqa: F401
                        seeds_for, unet_dtype)
from .pipelines.base import sha as _sha  # noqa: F401

_seeds = seeds_for
