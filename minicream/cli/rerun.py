"""`--from IMAGE.png`: which options a PNG stores (the re-run table) and the checks that a re-run gets the same
inputs. `minicream generate --from` reads text2img and scene PNGs; edit, vary and outpaint read their own modes'."""
from __future__ import annotations

from ..errors import MinicreamError

# mode recorded in a PNG -> the command that re-runs it (its input image is not stored)
EDIT_COMMANDS = {"img2img": "edit", "inpaint": "edit", "outpaint": "outpaint", "variation": "vary", "blend": "blend"}

STORED = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps", "guidance": "cfg_scale",
          "sampler": "sampler", "seed": "seed", "strength": "strength", "style": "style", "size": "size",
          "upscale_steps": "upscale_steps", "upscale_noise": "upscale_noise",
          "upscale_sampler": "upscale_sampler", "upscale_consistent": "upscale_consistent"}  # option -> PNG key


def from_png(path, allowed: tuple[str, ...]) -> dict:
    """The options a PNG made by one of the `allowed` modes stores (for `--from`), plus its input hashes."""
    from ..io.pngmeta import check_stored_types, read_png_params

    p = check_stored_types(read_png_params(path), path)
    if p.get("mode") not in allowed:
        raise MinicreamError(f"{path} was made by {p.get('mode') or 'text2img'}, not by {' or '.join(allowed)}; "
                             f"re-run it with the command that made it")
    out = stored_options(p)
    if isinstance(p.get("extend"), dict):
        out.update({k: v for k, v in p["extend"].items() if k in ("left", "right", "top", "bottom")})
    if p["mode"] == "variation" and "style" not in p:
        out["style"] = "model"  # variations from before style "vary" were drawn in one design
    if p["mode"] == "variation":  # variations from before the image-prompt adapter were re-noised
        out["method"] = p.get("method", "renoise")
        out.update({k: v for k, v in image_prompt_options(p).items() if k in ("image_scale", "image_detail", "image_strength")})
    out["hashes"] = {k: p[k] for k in ("init_image_sha256", "mask_sha256") if k in p}
    out["mode"] = p["mode"]
    out["adapters"] = p.get("adapters")  # re-run with the same adapters, or refuse (cli/finetune.py)
    return out


def stored_options(p: dict) -> dict:
    """The options (by name) a PNG's parameters store, the sampling ones with what "not stored" meant."""
    out = {k: p[v] for k, v in STORED.items() if v in p}
    out["guidance_max_noise"] = p.get("guidance_max_noise", 1.0)  # not stored = guidance at every step
    out["cads"] = p.get("cads", 0.0)  # not stored = no condition annealing
    if "upscale_steps" in p:  # upscaled before the upscaler had a choice of samplers (its ODE) or back-projected
        out["upscale_sampler"] = p.get("upscale_sampler", "euler")
        out["upscale_consistent"] = p.get("upscale_consistent", False)
    return out


def control_options(p: dict) -> dict:
    """A PNG's control records -> the re-run's control_kind / control_scale / control_preprocess / control_start /
    control_end options (one control: values; several: lists; a record without a window steered at every step) and
    the hashes its control images must have."""
    records = p.get("control")
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        return {}
    records = [{"start": 0.0, "end": 1.0, **r} for r in records]  # drawn before the window existed: every step
    pick = (lambda key: records[0].get(key)) if len(records) == 1 else (lambda key: [r.get(key) for r in records])
    return {"control_kind": pick("kind"), "control_scale": pick("scale"), "control_preprocess": pick("preprocess"),
            "control_start": pick("start"), "control_end": pick("end"),
            "control_sha256": [r.get("sha256") for r in records]}


def check_control(pipe, stored_hashes: list | None, control, kinds_preprocess: tuple) -> None:
    """The control image(s) of a `--from` re-run must be the ones the PNG was drawn with (by their hints' hashes)."""
    if not stored_hashes:
        return
    if control is None:
        raise MinicreamError("the --from PNG was drawn with a control image; give it again with --control IMAGE")
    from ..control.use import hint_sha, read_hint

    images = control if isinstance(control, (list, tuple)) else [control]
    preps = kinds_preprocess if isinstance(kinds_preprocess, (list, tuple)) else [kinds_preprocess] * len(images)
    if len(images) != len(stored_hashes):
        raise MinicreamError(f"the --from PNG was drawn with {len(stored_hashes)} control images, {len(images)} given")
    for want, image, prep in zip(stored_hashes, images, preps):
        if hint_sha(read_hint(image, pipe.image_size, prep or "none")) != want:
            raise MinicreamError(f"the control image given is not the one the --from PNG was drawn with (sha256 {want} "
                                 "expected)")


def image_prompt_options(p: dict) -> dict:
    """A PNG's image-prompt records -> the re-run's image_scale (one value, or a list) and its images' hashes."""
    records = p.get("image_prompt")
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        return {}
    scales = [r.get("scale") for r in records]
    if records[0].get("prior"):  # drawn through the prior: its embeddings come again from the text and the seeds
        return {"image_scale": scales[0], "prior": True}
    return {"image_scale": scales[0] if len(scales) == 1 else scales, "image_detail": bool(records[0].get("detail", False)),
            "image_strength": records[0].get("strength", 1.0), "image_prompt_sha256": [r.get("sha256") for r in records]}


def check_image_prompt(pipe, stored_hashes: list | None, images) -> None:
    """The image prompt(s) of a `--from` re-run must be the ones the PNG was drawn with (by their pixels' hashes)."""
    if not stored_hashes:
        return
    if images is None:
        raise MinicreamError("the --from PNG was drawn with an image prompt; give it again with --image-prompt IMAGE")
    from ..image_prompt.use import read_image
    from ..io.imagefile import pixels_sha

    images = images if isinstance(images, (list, tuple)) else [images]
    if len(images) != len(stored_hashes):
        raise MinicreamError(f"the --from PNG was drawn with {len(stored_hashes)} image prompts, {len(images)} given")
    for want, image in zip(stored_hashes, images):
        if pixels_sha(read_image(image, pipe.image_size)) != want:
            raise MinicreamError(f"the image prompt given is not the one the --from PNG was drawn with (sha256 {want} expected)")


def check_inputs(pipe, stored: dict, image, mask) -> None:
    """The image (and mask) given to a `--from` re-run must be the ones the PNG was made from."""
    from ..editing import load_image, load_mask
    from ..pipelines import sha

    for key, value, load in (("init_image_sha256", image, load_image), ("mask_sha256", mask, load_mask)):
        want = stored["hashes"].get(key)
        if want and value is not None and sha(load(value, pipe.image_size)) != want:
            what = "image" if key.startswith("init") else "mask"
            raise MinicreamError(f"the {what} given is not the one the --from PNG was made from (sha256 {want} expected)")
