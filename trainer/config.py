"""One typed, validated config for everything: data, model, augment, optim, train, decode, tracking.

A config is a tree of frozen-free dataclasses. It comes from a YAML file, then dotted
`key=value` overrides (command line, `wandb.config`, Optuna trials: all the same path,
`apply_overrides`). Every field carries its meaning and allowed range in `metadata`,
which `launch config keys` prints and sweep validation checks against.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from trainer.errors import ConfigError
from trainer.keyspec import KeySpec, coerce
from trainer.metrics import SELECTABLE, suggest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
RETIRED = ("train.num_workers",)  # keys of older run folders and checkpoints: read and ignored


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A config field: its default, a one-line meaning and an optional numeric range."""
    meta = {"help": help, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    root: str = opt("data/synthetic", "dataset folder (clips + STEM.csv) or a manifest CSV (id,video,text[,split])")
    cache_dir: str = opt("", "where the decoded-clip cache lives; empty: <root>/.lipsweep_cache")
    vocab: str = opt("configs/vocab/vocab.json", "vocabulary JSON: token -> id (1..N)")
    image_size: int = opt(112, "frame side in pixels; clips of another size are resized with a warning", min=8)
    min_frames: int = opt(1, "clips with fewer frames are bad", min=1)
    max_frames: int = opt(64, "clips with more frames are bad", min=1)
    val_ratio: float = opt(0.1, "share of clips in the validation split", min=0.0, max=0.9)
    test_ratio: float = opt(0.1, "share of clips in the test split", min=0.0, max=0.9)
    split_seed: int = opt(0, "seed of the deterministic train/val/test split", min=0)
    skip_bad: bool = opt(False, "skip bad clips (listed in the log) instead of stopping")
    unknown_to_unk: bool = opt(False, "map unknown character clusters to <unk> (counted, reported) instead of failing")
    word_separator: bool = opt(False, "add a word-separator token between words (enables WER)")


@dataclass
class FrontendConfig:
    widths: list[int] = opt([64, 128, 256, 512], "channels of the 3-D stem / ResNet layer 1 and of layers 2, 3, 4")


@dataclass
class EncoderConfig:
    dim: int = opt(768, "Conformer attention dimension (adim)", min=1)
    heads: int = opt(12, "Conformer attention heads", min=1)
    ffn_dim: int = opt(3072, "Conformer feed-forward units (eunits)", min=1)
    layers: int = opt(12, "Conformer blocks", min=1)
    kernel_size: int = opt(31, "Conformer convolution-module kernel (odd)", min=1)


@dataclass
class DecoderConfig:
    dim: int = opt(768, "Transformer decoder attention dimension (equals encoder.dim)", min=1)
    heads: int = opt(12, "decoder attention heads", min=1)
    ffn_dim: int = opt(3072, "decoder feed-forward units", min=1)
    layers: int = opt(6, "decoder blocks", min=1)


@dataclass
class PretrainedConfig:
    path: str = opt("", "checkpoint to start from (auto_avsr, LRW-style, Lightning or lipsweep); empty: none")
    parts: list[str] = opt(["frontend", "proj_encoder", "encoder"], "parts to load: frontend, proj_encoder, encoder, decoder, ctc")


@dataclass
class FreezeConfig:
    frontend: bool = opt(False, "freeze the Conv3d + ResNet-18 frontend (BatchNorm kept in eval mode)")
    encoder_layers: int = opt(0, "freeze the first N encoder blocks; -1 freezes the whole encoder", min=-1)


@dataclass
class ModelConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    dropout: float = opt(0.1, "dropout rate in encoder and decoder", min=0.0, max=0.9)
    ctc_weight: float = opt(0.1, "training loss weight of CTC against attention", min=0.0, max=1.0)
    label_smoothing: float = opt(0.1, "label smoothing of the attention loss", min=0.0, max=0.9)
    adapter: Literal["none", "linear", "mlp"] = opt("none", "small trained adapter between encoder and decoder")
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)


@dataclass
class AugmentConfig:
    crop_size: int = opt(88, "random crop (train) / centre crop (val, test) side", min=8)
    flip_prob: float = opt(0.5, "horizontal flip probability, one draw per clip", min=0.0, max=1.0)
    time_mask_window: int = opt(10, "at most this many frames masked per stride (0: off)", min=0)
    time_mask_stride: int = opt(25, "one time mask per this many frames", min=1)
    time_warp: bool = opt(False, "random time warp of each training clip")
    mean: float = opt(0.419232189655303955078125, "normalisation mean on [0, 1] pixels")
    std: float = opt(0.133925855159759521484375, "normalisation std on [0, 1] pixels", min=1e-6)


@dataclass
class OptimConfig:
    lr: float = opt(1e-3, "peak learning rate of AdamW", min=0.0)
    weight_decay: float = opt(0.01, "AdamW weight decay", min=0.0)
    warmup_epochs: float = opt(5.0, "linear warm-up length in epochs, then cosine decay", min=0.0)
    grad_clip: float = opt(5.0, "clip the global gradient norm to this (0: off)", min=0.0)


@dataclass
class TrainConfig:
    max_epochs: int = opt(75, "epochs to train", min=1)
    batch_frames: int = opt(0, "batches of at most this many frames in total (0: use batch_size)", min=0)
    batch_size: int = opt(16, "clips per batch when batch_frames is 0", min=1)
    accumulate: int = opt(1, "batches per optimizer step", min=1)
    seed: int = opt(42, "seed of weights, batch order and augmentation", min=0)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = opt("auto", "auto: fp16 + grad scaler on P100/T4, bf16 where supported, fp32 on CPU")
    select_metric: str = opt("val/cer", "validation metric that picks best.pt, early stopping and pruning (a sweep sets its own)")
    patience: int = opt(0, "stop after this many validations without a better select_metric (0: never)", min=0)
    val_every: int = opt(1, "validate every N epochs", min=1)
    max_minutes: float = opt(0.0, "stop after this many minutes (0: no budget)", min=0.0)
    run_dir: str = opt("runs", "folder holding one folder per run")
    train_cer_every: int = opt(1, "every N epochs also decode a fixed training subset for train/cer (0: never)", min=0)
    train_cer_clips: int = opt(64, "size of that training subset", min=1)
    worst_k: int = opt(10, "worst validation clips saved per epoch", min=0)
    max_bad_steps: int = opt(20, "stop as failed after this many NaN/inf losses in a row", min=1)
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    frontend_cache: Literal["off", "auto", "on"] = opt(
        "auto", "run a frozen frontend once and train from its stored features (auto: whenever the frontend is frozen)"
    )
    frontend_cache_views: int = opt(8, "augmented training views per clip in the frontend cache", min=1)
    frontend_cache_memory: float = opt(0.5, "keep the cache on the training device when it fits in this share of free memory", min=0.0, max=1.0)
    noise_input: bool = opt(False, "control run: Gaussian noise replaces every clip's frames (the model must not learn)")


@dataclass
class DecodeConfig:
    beam_size: int = opt(40, "beam width", min=1)
    ctc_weight: float = opt(0.1, "weight of CTC prefix scores in the search (decoder gets 1 - this)", min=0.0, max=1.0)
    penalty: float = opt(0.0, "length bonus per emitted token")
    max_len_ratio: float = opt(0.0, "maximum output length as a ratio of encoder frames (0: frames, with end detection)", min=0.0)
    min_len_ratio: float = opt(0.0, "minimum output length as a ratio of encoder frames", min=0.0)
    nbest: int = opt(1, "hypotheses kept per utterance", min=1)
    batch_size: int = opt(32, "utterances decoded together", min=1)


@dataclass
class TrackingConfig:
    wandb: Literal["online", "offline", "disabled"] = opt("disabled", "W&B mode (the WANDB_MODE environment variable wins)")
    project: str = opt("lipsweep", "W&B project")
    entity: str = opt("", "W&B entity (team or user); empty: your default")
    group: str = opt("", "W&B run group")
    tags: list[str] = opt([], "W&B run tags")
    name: str = opt("", "run name; empty: generated")
    log_checkpoint: bool = opt(False, "upload the best checkpoint as a W&B artifact")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# --------------------------------------------------------------------------- schema


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def schema(cls: type = Config, prefix: str = "") -> dict[str, KeySpec]:
    """Every leaf key of the config, in declaration order."""
    out: dict[str, KeySpec] = {}
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if _is_section(hints[f.name]):
            out.update(schema(hints[f.name], key + "."))
        else:
            m = f.metadata
            out[key] = KeySpec(key, hints[f.name], getattr(default, f.name), m.get("help", ""), m.get("min"), m.get("max"))
    return out


def sections(cls: type = Config, prefix: str = "") -> set[str]:
    """Every dotted section name (`model`, `model.encoder`, ...)."""
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            out.add(prefix + f.name)
            out |= sections(hints[f.name], prefix + f.name + ".")
    return out


def closest_key(key: str, known: list[str] | None = None) -> str | None:
    """The valid key a misspelt one most likely meant."""
    known = known if known is not None else list(schema())
    hits = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if hits:
        return hits[0]
    leaf = key.rsplit(".", 1)[-1]  # a right name in the wrong section
    hits = difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1] for k in known], n=1, cutoff=0.75)
    return next(k for k in known if k.rsplit(".", 1)[-1] == hits[0]) if hits else None


def unknown_key_error(key: str, where: str = "") -> ConfigError:
    hint = closest_key(key)
    suffix = f"; did you mean '{hint}'?" if hint else "; see `python -m launch config keys`"
    return ConfigError(f"{where}unknown config key '{key}'{suffix}")


# --------------------------------------------------------------------------- load / override / save


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted key: value}; sections become prefixes."""
    out: dict[str, Any] = {}
    section_names = sections()
    for k, v in tree.items():
        key = prefix + str(k)
        if isinstance(v, dict) and key in section_names:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_key(cfg: Config, key: str, value: Any, where: str = "") -> None:
    """Set one dotted key, validated."""
    specs = schema()
    if key not in specs:
        raise unknown_key_error(key, where)
    value = coerce(specs[key], value, where)
    *path, leaf = key.split(".")
    node: Any = cfg
    for part in path:
        node = getattr(node, part)
    setattr(node, leaf, value)


def get_key(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def parse_override(text: str) -> tuple[str, str]:
    """`optim.lr=3e-4` or W&B's `--optim.lr=3e-4` -> ("optim.lr", "3e-4")."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body:
        raise ConfigError(f"override '{text}' is not of the form key=value (for example optim.lr=3e-4)")
    key, value = body.split("=", 1)
    return key.strip(), value


def apply_overrides(cfg: Config, overrides: dict[str, Any] | list[str], where: str = "") -> Config:
    """Apply dotted overrides from the CLI (`["a.b=1"]`), wandb.config or an Optuna trial (`{"a.b": 1}`)."""
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    for key, value in flatten(dict(overrides)).items():
        set_key(cfg, key, value, where)
    check(cfg)
    return cfg


def check(cfg: Config) -> None:
    """Constraints between keys."""
    if cfg.model.decoder.dim != cfg.model.encoder.dim:
        raise ConfigError(
            f"model.decoder.dim ({cfg.model.decoder.dim}) must equal model.encoder.dim ({cfg.model.encoder.dim}), as in auto_avsr"
        )
    for name, sec in (("encoder", cfg.model.encoder), ("decoder", cfg.model.decoder)):
        if sec.dim % sec.heads:
            raise ConfigError(f"model.{name}.dim ({sec.dim}) must be divisible by model.{name}.heads ({sec.heads})")
    if cfg.model.encoder.kernel_size % 2 == 0:
        raise ConfigError(f"model.encoder.kernel_size must be odd, got {cfg.model.encoder.kernel_size}")
    if len(cfg.model.frontend.widths) != 4 or min(cfg.model.frontend.widths) < 1:
        raise ConfigError(f"model.frontend.widths must be 4 positive channel counts, got {cfg.model.frontend.widths}")
    if cfg.data.val_ratio + cfg.data.test_ratio >= 1.0:
        raise ConfigError("data.val_ratio + data.test_ratio must be below 1")
    if cfg.data.min_frames > cfg.data.max_frames:
        raise ConfigError(f"data.min_frames ({cfg.data.min_frames}) is above data.max_frames ({cfg.data.max_frames})")
    if cfg.augment.crop_size > cfg.data.image_size:
        raise ConfigError(f"augment.crop_size ({cfg.augment.crop_size}) is larger than data.image_size ({cfg.data.image_size})")
    if cfg.train.select_metric not in SELECTABLE:
        raise ConfigError(
            f"train.select_metric: '{cfg.train.select_metric}' is not a validation metric"
            f"{suggest(cfg.train.select_metric, SELECTABLE)} (allowed: {', '.join(SELECTABLE)})"
        )
    parts = {"frontend", "proj_encoder", "encoder", "decoder", "ctc"}
    for p in cfg.model.pretrained.parts:
        if p not in parts:
            raise ConfigError(f"model.pretrained.parts: unknown part '{p}'; allowed: {', '.join(sorted(parts))}")


def resolve_path(path: str | Path) -> Path:
    """A config path as given, or relative to the project's `configs/` folder."""
    p = Path(path)
    if p.exists():
        return p
    for candidate in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file not found: {path}")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Defaults <- YAML file <- overrides, validated."""
    cfg = Config()
    if path is not None:
        file = resolve_path(path)
        try:
            tree = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of sections")
        for key, value in flatten(tree).items():
            if key not in RETIRED:
                set_key(cfg, key, value, where=f"{file}: ")
    if overrides:
        apply_overrides(cfg, overrides)
    check(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_flat(cfg: Config) -> dict[str, Any]:
    """{dotted key: value} for every leaf (W&B config, run tables)."""
    return {k: get_key(cfg, k) for k in schema()}


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def save_config(cfg: Config, path: str | Path, header: str = "") -> None:
    """Write the resolved config atomically; `header` becomes a leading comment block."""
    from trainer.io import atomic_write_text

    comment = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    atomic_write_text(Path(path), comment + to_yaml(cfg))


def config_from_dict(tree: dict[str, Any]) -> Config:
    """A config from a resolved dict (checkpoints, run folders), validated like a file."""
    cfg = Config()
    for key, value in flatten(tree).items():
        if key not in RETIRED:
            set_key(cfg, key, value)
    check(cfg)
    return cfg

