"""`python -m launch checkpoint inspect PATH`: what a checkpoint holds and what a config would load from it."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Inspect checkpoints (auto_avsr, LRW, Lightning, lipsweep) before training from them."""


@checkpoint_group.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_path",
    default=None,
    help="config whose model loads the checkpoint (default: the checkpoint's own config, else configs/base.yaml)",
)
@click.option("--keys", "show_keys", is_flag=True, help="also list every key with its status and reason")
@click.argument("overrides", nargs=-1)
def inspect_command(path: Path, config_path: str | None, show_keys: bool, overrides: tuple[str, ...]) -> None:
    """Show PATH's format, size and architecture, then the load report (loaded / re-initialised / unused keys,
    with reasons) and parameter counts for the model of the config, without training.
    OVERRIDES are dotted key=value pairs (model.pretrained.parts=[frontend], model.encoder.layers=6)."""
    import torch

    from trainer.config import apply_overrides, config_from_dict, load_config
    from trainer.model.lipreader import LipReader, apply_freezing, count_parameters
    from trainer.model.pretrained import PARTS, describe, load_state, read_checkpoint, unwrap
    from trainer.text import Tokenizer

    raw = read_checkpoint(path)
    state, fmt = unwrap(raw, path)
    values = sum(t.numel() for t in state.values())
    click.echo(f"{path}: {fmt} format, {len(state)} keys, {values:,} values")
    for key, value in describe(state).items():
        click.echo(f"  {key} = {value}")

    own = config_path is None and fmt == "lipsweep" and isinstance(raw.get("config"), dict)
    if config_path is not None:
        cfg, source = load_config(config_path, list(overrides)), config_path
    elif own:
        cfg, source = config_from_dict(raw["config"]), "the checkpoint's own config; every part, as eval loads it"
        apply_overrides(cfg, list(overrides))
    else:
        cfg, source = load_config("base", list(overrides)), "configs/base.yaml"
    odim = Tokenizer.from_config(cfg.data).vocab_size
    click.echo(f"\nloading into the model of {source} (output size {odim} from {cfg.data.vocab}):")
    with torch.device("meta"):  # shapes only: nothing is allocated or copied
        model = LipReader(cfg.model, odim)
    parts = [p for p in PARTS if p != "adapter" or model.adapter is not None] if own else cfg.model.pretrained.parts
    report = load_state(model, state, parts, str(path), fmt)
    apply_freezing(model, cfg.model.freeze)
    click.echo(report.table(keys=show_keys))
    click.echo("")
    click.echo(str(count_parameters(model)))
