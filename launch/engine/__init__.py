"""The sweep engine: what the `sweep` commands run, apart from the commands themselves.

- `spec`, `schema`, `params`: a sweep YAML (W&B's format, dotted config keys) loaded and checked
  against W&B's schema, the config schema and the metric registry (`trainer.metrics`).
- `pruners`: the project's pruner names, their options and their Optuna factory (one place).
- `study`: Optuna storages, samplers, the pruner block a sweep resolves to, and sampling one trial.
- `plan`, `objective`, `trials`, `local`, `decode`, `progress`: `sweep local` (a study run by K workers,
  each trial a normal run) and its status lines.
- `confirm`, `seed_noise`: `sweep confirm` (the best configs of a sweep re-trained over seeds, on the same runner)
  and its noise verdict (Welch's t-interval over the seeds).
- `login`, `wandb_create`, `wandb_agent`, `wandb_scheduler`: W&B's side (the login check, the config
  W&B receives, supervised agents with a shared pruning study, W&B's Optuna engine with our factory).

Imports go one way (spec -> study -> plan -> objective -> local -> confirm; W&B modules on spec and study);
the trainer is called through `trainer.train.train`, and nothing here is imported by the trainer.
"""
