"""A model folder and the files in it: the one place that knows the layout `minicream train` exports.

    model_index.json   format, image size, objective (scheduler), text encoder, sampling defaults, recipe
    unet/ vae/         config.json + model.safetensors (bf16)
    evaluator/         the best-of-N evaluator; evaluator/judge/ the separate judge used by `minicream eval`
    upscaler/          optional: the diffusion upscaler (config.json, model.safetensors, upscaler.json settings)
    control/KIND/      optional: ControlNets (control.json: the UNet they were trained for)
    image_prompt/      optional: the image-prompt adapter (image_prompt.json) and image_prompt/prior/, the text-to-image-
                       embedding prior
    concepts.json      the concepts and styles the language filter maps prompts to (vocabulary.json: the captions)
    train_log.txt      how the weights were made

The models shipped inside the package are found by name (`SHIPPED`, `resolve_model`).

Inference reads a model through this class only; it imports nothing from training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MinicreamError
from .atomic import read_json

MODEL_INDEX = "model_index.json"
UNET_DIR, VAE_DIR, EVALUATOR_DIR, JUDGE_DIR, UPSCALER_DIR = "unet", "vae", "evaluator", "judge", "upscaler"
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
CONTROL_DIR, CONTROL_SETTINGS = "control", "control.json"  # control/<kind>/: a ControlNet and what it was trained for
# image_prompt/: the image-prompt adapter (its settings name the UNet and evaluator it was trained for); prior/ inside it
IMAGE_PROMPT_DIR, IMAGE_PROMPT_SETTINGS, PRIOR_DIR = "image_prompt", "image_prompt.json", "prior"
MAX_INDEX_BYTES = 1 << 20  # model_index.json is a few KB

# Models shipped inside the package, by name (`Pipeline.from_pretrained("reference")`, `--model reference`).
# "full": `--config full` on every concept in four designs, seven sittings (the default; continue it with
# `--init-from full`). "reference": the 30-minute recipe, 61 concepts (the quick model). "onestep": the default model
# distilled to one step by `minicream distill` (reflow, then distillation; its model_index.json names the teacher).
SHIPPED = {"reference": "reference", "full": "full", "onestep": "onestep"}
DEFAULT_MODEL = "full"


def default_model_dir() -> Path:
    """The shipped default model, inside the installed package."""
    return shipped_model_dir(DEFAULT_MODEL)


def shipped_model_dir(name: str) -> Path:
    return Path(__file__).parent.parent / SHIPPED[name]


def resolve_model(model: str | Path | None) -> Path:
    """None: the default shipped model; a shipped model's name; else a model folder's path."""
    if model is None:
        return default_model_dir()
    if isinstance(model, str) and model in SHIPPED and not Path(model).exists():
        return shipped_model_dir(model)
    return Path(model)


def evaluator_folder(name: str | Path, setting: str) -> Path:
    """An evaluator folder given directly, or the one inside a model folder or shipped model (REPA's targets, the
    decoder fine-tune's perceptual features); refused with the config `setting` named."""
    path = Path(name)
    if not (path / "config.json").is_file():
        path = resolve_model(str(name)) / EVALUATOR_DIR
    if not (path / "config.json").is_file():
        raise MinicreamError(f"{setting}: no evaluator in {name} (a model folder or a shipped model's name)")
    return path


def _field(index: dict, path: Path, key: str, kind: type | tuple, where: dict | None = None):
    node = index if where is None else where
    value = node.get(key) if isinstance(node, dict) else None
    if value is None or not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MinicreamError(f"{path}: {key!r} is missing or not a {want}; re-export the model with `minicream train`")
    return value


@dataclass
class ModelDir:
    path: Path
    index: dict = field(repr=False)

    @classmethod
    def open(cls, path: str | Path) -> "ModelDir":
        """Read and check model_index.json: a one-line error for a folder that is not a model or a broken index."""
        path = Path(path)
        index_path = path / MODEL_INDEX
        if not index_path.is_file():
            raise MinicreamError(f"{path}: not a minicream model directory (missing {MODEL_INDEX})")
        index = read_json(index_path, max_bytes=MAX_INDEX_BYTES)
        if not isinstance(index, dict):
            raise MinicreamError(f"{index_path}: expected a JSON object")
        size = _field(index, index_path, "image_size", int)
        if not 8 <= size <= 4096 or size % 8:
            raise MinicreamError(f"{index_path}: image_size must be a multiple of 8 in 8..4096, got {size}")
        objective = _field(index, index_path, "objective", dict)
        if objective.get("prediction_type") not in PREDICTION_TYPES:
            raise MinicreamError(f"{index_path}: objective.prediction_type must be one of {', '.join(PREDICTION_TYPES)}")
        network = objective.get("network")  # a flow model whose network predicts v (minicream distill)
        if network is not None and (objective["prediction_type"] != "flow" or not isinstance(network, dict)
                                    or network.get("prediction_type") != "v_prediction"):
            raise MinicreamError(f"{index_path}: objective.network is for flow models whose network predicts v: "
                                 '{"prediction_type": "v_prediction", "beta_schedule": ...}')
        te = _field(index, index_path, "text_encoder", dict)
        _field(index, index_path, "name", str, te)
        _field(index, index_path, "max_length", int, te)
        if not isinstance(index.get("sample", {}), dict):
            raise MinicreamError(f"{index_path}: 'sample' must be an object of sampling defaults")
        for d in (UNET_DIR, VAE_DIR):
            if not (path / d / "config.json").is_file():
                raise MinicreamError(f"{path}: missing {d}/config.json; the model folder is incomplete")
        return cls(path, index)

    # -- the parts ------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def unet(self) -> Path:
        return self.path / UNET_DIR

    @property
    def vae(self) -> Path:
        return self.path / VAE_DIR

    @property
    def evaluator(self) -> Path:
        return self.path / EVALUATOR_DIR

    @property
    def upscaler(self) -> Path:
        return self.path / UPSCALER_DIR

    @property
    def judge(self) -> Path:
        return self.path / EVALUATOR_DIR / JUDGE_DIR

    def has(self, part: Path) -> bool:
        return (part / "config.json").is_file()

    @property
    def image_size(self) -> int:
        return int(self.index["image_size"])

    @property
    def objective(self) -> dict:
        return self.index["objective"]

    @property
    def text_encoder(self) -> dict:
        return self.index["text_encoder"]

    @property
    def defaults(self) -> dict:
        return self.index.get("sample", {})
