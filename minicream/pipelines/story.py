"""A story: several related scenes ("a cat next to a house", "the cat on a car", "two cats") in which every object that
recurs keeps its look (issue 33 item 2).

    1. filter     each scene's prompt through the language filter: its objects (a scene's, or the one concept it names)
    2. cast       every object of the story once, in order of first appearance: one design for the whole story (the
                  `style` given, else the design the story's seed picks among the ones all its objects were trained in)
                  and its own seed (derived from the story's seed and its place in the cast)
    3. draw       each cast member drawn once, at the model's size
    4. compose    each scene laid out as a scene is (pipelines/layout.py, seeded by the story's seed and the scene's
                  number), every box filled with its object's one drawing (scene.py's paste_object); a scene of one
                  object is its drawing; `harmonize` > 0 redraws each composed scene lightly as one picture
    5. attach     each PNG records the story (its scenes, the cast: concept, caption, seed) and the scene's layout

One story per seed (num_images stories, image-major). `minicream story "scene | scene | ..."`, `Pipeline.story([...])`,
POST /api/modes/story; the options are declared below, as every mode's.

Drawing each recurring object once and reusing it is the simplest way to keep it the same (the issue's first
suggestion): the same latent decoded once, so the same design, colours and shape in every scene.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import MinicreamError
from ..evaluator.rerank import candidate_seed
from ..filter.variety import VARY, common_styles
from .layout import MAX_OBJECTS
from .modes import FILTER, SAMPLING, Mode, Option
from .scene import CANVAS, HARMONIZE, check_canvas, layout_for, paste_object

MAX_SCENES = 8


def scene_objects(filtered) -> list[str]:
    """The concepts a filtered scene prompt draws, one per object (a count repeats it)."""
    if filtered.scene:
        return [o["concept"] for o in filtered.scene["objects"] for _ in range(int(o.get("count") or 1))]
    return list(filtered.concepts[:1])


def story_design(pipe, concepts: list[str], style: str | None, seed: int) -> str | None:
    """The story's one design: a design the user named, else (style vary or the model's default) the seed's pick among
    the designs every object was trained in; None lets the model choose."""
    style = pipe.resolve_style(style)
    if style not in (None, VARY, "model"):
        return style
    if style == "model":
        return None
    designs = common_styles(concepts, pipe.vocabulary)
    return designs[seed % len(designs)] if designs else None


def split_scenes(scenes) -> list[str]:
    """The scenes of a story: a list of prompts, or one text with a scene per line (or separated by " | ")."""
    if isinstance(scenes, str):
        scenes = [p.strip() for line in scenes.splitlines() for p in line.split("|")]
        scenes = [p for p in scenes if p]
    if not isinstance(scenes, (list, tuple)) or not 2 <= len(scenes) <= MAX_SCENES:
        raise MinicreamError(f"a story is 2 to {MAX_SCENES} scene prompts (one per line, or separated by \" | \")")
    return list(scenes)


def story(pipe, settings, scenes, style, filter, llm, harmonize, canvas) -> list[Image.Image]:
    """The story once per seed of `settings` (image-major: every scene of the first seed's story, then the next)."""
    scenes = split_scenes(scenes)
    for s in scenes:
        pipe.check_prompt(s)
    check_canvas(canvas)
    if isinstance(harmonize, bool) or not isinstance(harmonize, (int, float)) or not 0.0 <= harmonize < 1.0:
        raise MinicreamError(f"harmonize must be a number in [0, 1), got {harmonize!r}")
    # 1. filter
    filtered = [pipe.filter_prompt(s, filter, style="model", llm=llm) for s in scenes]
    objects = [scene_objects(f) for f in filtered]
    for s, objs in zip(scenes, objects):
        if not objs:
            raise MinicreamError(f"scene {s!r}: the filter found no object the model knows to draw")
        if len(objs) > MAX_OBJECTS:
            raise MinicreamError(f"scene {s!r}: at most {MAX_OBJECTS} objects per scene")
    cast = list(dict.fromkeys(c for objs in objects for c in objs))
    uncond = pipe.encode_prompt(settings.negative_prompt)
    return [im for seed in settings.seeds for im in
            _one_story(pipe, settings, scenes, filtered, objects, cast, style, seed, harmonize, canvas, uncond)]


def _one_story(pipe, settings, scenes, filtered, objects, cast, style, seed, harmonize, canvas, uncond):
    # 2. cast
    design = story_design(pipe, cast, style, seed)
    captions = [f"{c}, {design}" if design else c for c in cast]
    seeds = [candidate_seed(seed, k + 1) for k in range(len(cast))]
    # 3. draw
    latents = pipe.denoise(seeds, pipe.encode_prompt(captions), uncond, **settings.denoise_args)
    drawn = {c: Image.fromarray(p.permute(1, 2, 0).numpy(), "RGB") for c, p in zip(cast, pipe.decode(latents))}
    record = {"scenes": list(scenes), "cast": [{"concept": c, "caption": cap, "seed": s}
                                               for c, cap, s in zip(cast, captions, seeds)]}
    # 4. compose, 5. attach
    images = []
    for i, (prompt, f, objs) in enumerate(zip(scenes, filtered, objects)):
        scene_seed = candidate_seed(seed, 100 + i)
        layout = layout_for(pipe, f, None, scene_seed, canvas) if f.scene else None
        if layout is None:  # one object: its drawing, its near-white background made white as in a layout
            n = pipe.image_size
            im, extra = Image.new("RGB", (n, n), "white"), {}
            paste_object(im, drawn[objs[0]], (0, 0, n, n))
        else:
            im = Image.new("RGB", (layout.width, layout.height), "white")
            for k, obj in enumerate(layout.objects):  # a box's caption is its concept (the layout's own order)
                paste_object(im, drawn[obj.caption if obj.caption in drawn else objs[k]], obj.box)
            if harmonize > 0:
                im = _harmonize(pipe, settings, f, layout, im, scene_seed, harmonize, uncond)
            extra = {"layout": layout.to_dict()}
        pixels = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
        [out] = pipe.attach(pixels, [seed], prompt, settings, f, {"mode": "story", "scene": i, "story": record,
                                                                   "harmonize": float(harmonize), **extra})
        images.append(out)
    return images


def _harmonize(pipe, settings, filtered, layout, im, seed, strength, uncond) -> Image.Image:
    layout.check_harmonizable(pipe.image_size, pipe.image_size // pipe.latent_shape[-1])
    source = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    out = pipe.denoise([seed], pipe.encode_prompt(filtered.rewritten), uncond, **settings.denoise_args,
                       init=pipe.encode_image(source[None]), strength=strength,
                       canvas=pipe.latent_size(layout.height, layout.width))
    return Image.fromarray(pipe.decode(out)[0].permute(1, 2, 0).numpy(), "RGB")


MODE = Mode("story", "related scenes in which every recurring object keeps its look: each drawn once, reused in every "
            "scene", (
    Option("scenes", "str", None, "the scenes, one per line or separated by \" | \" (2 to 8), e.g. \"a cat next to a "
           "house | two cats\"", cli=False, required=True, limits={"min_length": 1, "max_length": 2000}),
    CANVAS, HARMONIZE,
    *SAMPLING, *FILTER,
), story)

__all__ = ["MAX_SCENES", "MODE", "scene_objects", "split_scenes", "story", "story_design"]
