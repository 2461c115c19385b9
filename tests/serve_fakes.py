"""A pipeline stand-in for server tests: instant, deterministic, and able to block or fail on demand."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from PIL import Image

from minicream.errors import MinicreamError
from minicream.pipelines import Pipeline
from minicream.pipelines.modes import Mode


def declared(mode: str, *names: str, **changed) -> Mode:
    """A stand-in's declaration of `mode`: only these of minicream's options (`changed`: {name: fields to replace}),
    as a pipeline that takes fewer options declares them."""
    real = Pipeline.modes[mode]
    options = tuple(dataclasses.replace(real.option(n), **changed.get(n, {})) for n in names)
    return Mode(mode, real.help, options, real.run)


TEXT2IMG = ("prompt", "negative_prompt", "num_images", "steps", "guidance", "sampler", "seed", "size", "callback")


class FakePipe:
    """Quacks like minicream.Pipeline: image_size, samplers, defaults, model_dir, model_hash, the modes it declares
    (text2img with the options __call__ takes), run(mode, ...) and __call__."""

    modes = {"text2img": declared("text2img", *TEXT2IMG)}

    image_size = 16
    samplers = ["ddim", "euler"]
    defaults = {"sampler": "euler", "steps": 4, "guidance": 3.0}
    model_dir = Path("fake-model")
    model_hash = "0123456789"

    @property
    def sizes(self) -> list[int]:  # no upscaler: the native size only
        return [self.image_size]

    def __init__(self, gate: threading.Event | None = None, step_seconds: float = 0.0, fail: Exception | None = None):
        self.gate, self.step_seconds, self.fail = gate, step_seconds, fail
        self.calls: list[dict] = []

    def __call__(self, prompt=None, negative_prompt="", num_images=1, steps=None, guidance=None, sampler=None, seed=None,
                 size=None, callback=None):
        if not isinstance(prompt, str) or not prompt.strip():  # as Pipeline.check_prompt (text is optional only
            raise MinicreamError("prompt is empty; describe what to draw")  # beside an image prompt, which fakes lack)
        steps = steps or self.defaults["steps"]
        sampler = sampler or self.defaults["sampler"]
        guidance = self.defaults["guidance"] if guidance is None else guidance
        self.calls.append({"prompt": prompt, "num_images": num_images, "steps": steps, "sampler": sampler, "seed": seed})
        if sampler not in self.samplers:
            raise MinicreamError(f"unknown sampler {sampler!r}")
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        if self.fail is not None:
            raise self.fail
        for i in range(steps):
            time.sleep(self.step_seconds)
            if callback:
                callback(i + 1, steps)
        seed = 7 if seed is None else seed
        images = []
        for k in range(num_images):
            im = Image.new("RGB", (self.image_size, self.image_size), (seed * 7 % 256, 80, 160))
            im.info["minicream"] = {"prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "sampler": sampler,
                                    "cfg_scale": guidance, "seed": seed + k, "width": self.image_size,
                                    "height": self.image_size, "model_hash": self.model_hash, "model": "fake-model"}
            images.append(im)
        return images

    def run(self, mode, **options):
        assert mode in self.modes, mode
        return self(**options)


class FakePipeWithOptions(FakePipe):
    """A stand-in that has the optional best-of-N and filter arguments, and reports them as later pipelines do."""

    modes = {"text2img": declared("text2img", *TEXT2IMG, "num_candidates", "filter",
                                  filter={"choices": ("off", "rewrite"), "default": "off"})}

    def __call__(self, prompt, negative_prompt="", num_images=1, steps=None, guidance=None, sampler=None, seed=None,
                 size=None, callback=None, num_candidates: int = 1, filter: str = "off"):
        images = super().__call__(prompt, negative_prompt, num_images, steps, guidance, sampler, seed, size, callback)
        for im in images:
            im.info["minicream"].update(num_candidates=num_candidates, score=0.25, filter=filter,
                                        rewritten_prompt=prompt.upper() if filter == "rewrite" else prompt)
        self.calls[-1].update(num_candidates=num_candidates, filter=filter)
        return images


class FakeEditPipe(FakePipe):
    """A stand-in with the edit modes as well (Pipeline.run(mode, ...)): records each run's mode and options, and
    draws like FakePipe. `name` is the model's name on the server."""

    modes = {**FakePipe.modes, **{m: Pipeline.modes[m] for m in ("img2img", "inpaint", "outpaint", "variation", "blend")}}

    def __init__(self, *args, name: str = "fake-model", **kwargs):
        super().__init__(*args, **kwargs)
        self.model_dir = Path(name)
        self.runs: list[dict] = []

    def run(self, mode, callback=None, **options):
        if mode == "text2img":
            return super().run(mode, callback=callback, **options)
        self.runs.append({"mode": mode, **options})
        count = options.get("frames") if mode == "blend" else options.get("num_images")
        return super().__call__(str(options.get("prompt") or options.get("b") or "thing"), num_images=count or 1,
                                steps=options.get("steps"), seed=options.get("seed"), callback=callback)
