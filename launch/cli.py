"""`python -m launch <command>`: the root group and the config commands.

Each area registers its commands at the bottom of this file; every command has `--help`.
"""

from __future__ import annotations

import sys

import click

from trainer import config as config_mod
from trainer.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """lipsweep: train auto_avsr-style lip-reading models and sweep them with W&B and Optuna."""


@cli.group("config")
def config_group() -> None:
    """Show resolved configs and the keys they accept."""


@config_group.command("show")
@click.argument("config", required=False)
@click.argument("overrides", nargs=-1)
def config_show(config: str | None, overrides: tuple[str, ...]) -> None:
    """Print CONFIG (a path or a name in configs/) resolved with dotted key=value OVERRIDES."""
    if config is not None and "=" in config:
        config, overrides = None, (config, *overrides)
    cfg = config_mod.load_config(config, list(overrides))
    click.echo(config_mod.to_yaml(cfg), nl=False)


@config_group.command("keys")
@click.option("--format", "fmt", type=click.Choice(["table", "yaml"]), default="table", show_default=True)
def config_keys(fmt: str) -> None:
    """List every config key with its type, default and meaning."""
    specs = config_mod.schema()
    if fmt == "yaml":
        import yaml

        rows = {k: {"type": s.allowed(), "default": s.default, "help": s.help} for k, s in specs.items()}
        click.echo(yaml.safe_dump(rows, sort_keys=False, allow_unicode=True), nl=False)
        return
    width = max(len(k) for k in specs)
    for key, spec in specs.items():
        click.echo(f"{key:<{width}}  {spec.allowed():<28}  {spec.default!s:<14}  {spec.help}")


def main() -> None:
    """Run the CLI; a UserError prints its message alone and exits with status 2."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


from launch.train import train_command  # noqa: E402

cli.add_command(train_command)

from launch.data import data_group  # noqa: E402

cli.add_command(data_group)

from launch.checkpoint import checkpoint_group  # noqa: E402

cli.add_command(checkpoint_group)

from launch.synth import synth_command  # noqa: E402

data_group.add_command(synth_command)

from launch.sweep import sweep_group  # noqa: E402

cli.add_command(sweep_group)

from launch.eval import eval_command  # noqa: E402

cli.add_command(eval_command)

from launch.runs import runs_group  # noqa: E402

cli.add_command(runs_group)

from launch.diagnose import diagnose_command, sanity_command  # noqa: E402

cli.add_command(diagnose_command)
cli.add_command(sanity_command)

from launch.demo import demo_command  # noqa: E402

cli.add_command(demo_command)
