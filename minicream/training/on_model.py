"""What the stand-alone recipes that train a part on top of a frozen model share (`train-control`, `train-image-prompt`,
`train-prior`): the model's training images, opening the run beside the model, and exporting the part with a JSON of
what it was trained for."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import MinicreamError
from ..io.atomic import write_text_atomic


def training_examples(pipe, folder: str = "", limit: int = 0) -> list:
    """The model's training images (single objects, no skin tones unless its recipe trained on them), from `folder`
    (default: the model's recipe's data), at most `limit` of them spread over the split (0 = all)."""
    from ..data.folder import load_caption_folder

    recipe = pipe.index.get("recipe") or {}
    data = recipe.get("data") or {}
    root = folder or (data.get("root") if data.get("source", "emoji") == "emoji" else data.get("source"))
    if not root or not (Path(root) / "train" / "metadata.jsonl").is_file():
        raise MinicreamError(f"{root or 'the model'}: no training images (build them with `minicream data emoji "
                             f"{root or 'data/emoji'}`, or pass --data FOLDER)")
    examples = load_caption_folder(root, size=pipe.image_size, split="train")
    if not data.get("skin_tones", False):
        examples = [e for e in examples if not e.meta.get("skin_tone")]
    if limit:
        examples = examples[:: max(1, len(examples) // limit)][:limit]
    if not examples:
        raise MinicreamError(f"{root}: no training images")
    return examples


def open_run(model: str, run_dir: str | Path, resume: bool, what: str, detail: str = "", evaluator: bool = False):
    """(the model's pipeline in fp32, the run folder, its log). Refuses a non-empty run without `resume`, an unknown
    model, and (`evaluator`) a model without an evaluator, before anything is written."""
    from ..pipelines import Pipeline
    from .recipe import RunLog

    run = Path(run_dir)
    if run.exists() and any(run.iterdir()) and not resume:
        raise MinicreamError(f"{run} is not empty; pass --resume to continue that run or choose another --out")
    pipe = Pipeline.from_pretrained(model, dtype="fp32")
    if evaluator:
        pipe.evaluator  # noqa: B018 (loading it refuses a model without one)
    run.mkdir(parents=True, exist_ok=True)
    log = RunLog(run / "train_log.txt")
    log(f"{what} start (resume={resume}), {detail}model {model}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    return pipe, run, log


def export_part(net: torch.nn.Module, folder: Path, settings_name: str, settings: dict, cfg, stats: dict | None) -> None:
    """`net` as bf16 safetensors + config.json in `folder`, and `settings` with the training's steps, minutes, threads
    and recipe in folder/settings_name."""
    from ..config import config_to_dict

    net.save_pretrained(folder, dtype=torch.bfloat16)
    settings = {**settings, "steps": stats and stats["steps"],
                "train_minutes": stats and round(stats["seconds"] / 60, 1), "torch_threads": torch.get_num_threads(),
                "recipe": config_to_dict(cfg)}
    write_text_atomic(folder / settings_name, json.dumps(settings, indent=1))


__all__ = ["export_part", "open_run"]
