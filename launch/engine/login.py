"""Commands that need W&B's server check for a login first: a clear error, never W&B's interactive prompt.

The check reads what wandb itself reads (WANDB_API_KEY, the netrc file, wandb's settings) through
`wandb.login(prompt=False, verify=False)`, which asks nothing and sends nothing when no key is found.
`WANDB_MODE=offline` (or disabled) gets the same kind of answer: these commands cannot work offline.
"""

from __future__ import annotations

import os

from trainer.errors import UserError

HOW_TO_LOG_IN = (
    "log in once with `wandb login` (it keeps your API key in ~/.netrc), or set WANDB_API_KEY (on Kaggle: "
    "Add-ons > Secrets, a secret named WANDB_API_KEY, then in the notebook "
    'os.environ["WANDB_API_KEY"] = UserSecretsClient().get_secret("WANDB_API_KEY"))'
)
NO_SERVER = "`python -m launch sweep local SWEEP.yaml` runs the same sweep with Optuna and needs no W&B server"
OFFLINE_MODES = ("offline", "dryrun", "disabled")


def require_login(what: str) -> None:
    """Raise UserError (exit 2) unless W&B's server can be used: WANDB_MODE is not offline and a key is found."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in OFFLINE_MODES:
        raise UserError(
            f"{what} needs W&B's server, but WANDB_MODE={mode}: unset WANDB_MODE (or set it to online), then "
            f"{HOW_TO_LOG_IN}; {NO_SERVER}"
        )
    import wandb

    if not wandb.login(prompt=False, verify=False):
        raise UserError(f"{what} needs W&B's server and finds no W&B login: {HOW_TO_LOG_IN}; {NO_SERVER}")
