"""minicream: a text-to-image latent diffusion model with a mixture-of-experts UNet, trained from scratch on a CPU.

    pipe = minicream.Pipeline.from_pretrained()      # the shipped reference model
    images = pipe("red apple", num_images=4, steps=20, seed=0)
"""
__version__ = "0.1.0"
__all__ = ["Pipeline", "MinicreamError", "load_config"]


def __getattr__(name):  # lazy: `minicream --help` should not pay for importing torch and diffusers
    if name == "Pipeline":
        from .pipelines import Pipeline

        return Pipeline
    if name == "MinicreamError":
        from .errors import MinicreamError

        return MinicreamError
    if name == "load_config":
        from .config import load_config

        return load_config
    raise AttributeError(name)
