"""The sampling settings of a call are one frozen value, built and checked once; nothing else decides an image."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import minicream
from minicream.errors import MinicreamError
from minicream.pipelines import PARAMS_KEY, SamplingSettings


def test_settings_are_one_frozen_checked_value(tiny_pipe):
    s = tiny_pipe.sampling_settings(steps=3, seed=5, num_images=2, cads=0.5, negative_prompt=None)
    assert (s.steps, s.seeds, s.cads, s.guidance_max_noise, s.negative_prompt) == (3, (5, 6), 0.5, 1.0, "")
    assert s.sampler == tiny_pipe.defaults.get("sampler", "dpmpp_2m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 4
    for options, message in (({"guidance_max_noise": 0}, "guidance_max_noise must be a number in"),
                             ({"cads": 11}, "cads must be a number in"), ({"steps": 0}, "steps must be in"),
                             ({"strength": 0}, "strength must be in"), ({"seed": "1"}, "seed must be an integer"),
                             ({"sampler": "nope"}, "unknown sampler")):
        with pytest.raises(MinicreamError, match=message):
            tiny_pipe.sampling_settings(**options)


def test_strength_too_small_for_the_default_steps_gets_more_steps():
    s = SamplingSettings.build({"steps": 1, "sampler": "euler"}, ["euler"], strength=0.6, seed=0)
    assert s.steps == 2  # int(2 * 0.6) == 1 step runs
    with pytest.raises(MinicreamError, match="strength"):
        SamplingSettings.build({"steps": 1, "sampler": "euler"}, ["euler"], steps=1, strength=0.6, seed=0)  # given steps are kept


def test_a_direct_denoise_uses_the_settings_it_is_given(tiny_pipe):
    """The guidance interval and CADS reach denoise as arguments: a direct call draws what a mode call draws."""
    cond, uncond = tiny_pipe.encode_prompt("red apple"), tiny_pipe.encode_prompt("")

    def latents(**options):
        s = tiny_pipe.sampling_settings(steps=2, seed=3, **options)
        with torch.inference_mode():
            return tiny_pipe.denoise(s.seeds, cond, uncond, **s.denoise_args)

    plain, limited = latents(), latents(guidance_max_noise=0.5)
    assert not torch.equal(plain, limited) and torch.equal(limited, latents(guidance_max_noise=0.5))
    assert not torch.equal(plain, latents(cads=1.0))
    [image] = tiny_pipe("red apple", steps=2, seed=3, guidance_max_noise=0.5, filter="none", style="model")
    assert image.info[PARAMS_KEY]["guidance_max_noise"] == 0.5
    assert torch.equal(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1),
                       tiny_pipe.decode(limited)[0])


def test_no_context_variable_and_no_long_file():
    root = Path(minicream.__file__).parent
    with_vars = sorted(p.name for p in root.rglob("*.py") if "ContextVar" in p.read_text(encoding="utf-8"))
    assert with_vars == ["deadline.py"]  # the server's per-request deadline only
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long
