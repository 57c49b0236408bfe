"""The GPU check: one command that measures the whole GPU path in minutes, as on Kaggle's T4.

    python -m bench.gpu --out DIR                  # on a GPU: every row, about 8 minutes at most; DIR/gpu.md, gpu.json
    python -m bench.gpu --out DIR --device cpu --quick   # every row on the small config, at most 3 minutes (CI)
    python -m bench.gpu --out DIR --rows search,amp --auto-avsr ../auto_avsr --espnet DIR_WITH_ESPNET2

By default a GPU other than a T4 emulates one (`--emulate t4`; `--emulate none` turns it off): fp16
autocast with a grad scaler, bf16 refused, memory capped at 15 GiB. Each row runs in its own process
under a time guard (bench/gpu/harness.py); a row that fails or runs out of time is reported with its
error and the others still run. The rows: bench/gpu/steps.py (device, training step, largest batch),
bench/gpu/amp.py (AMP sanity), bench/gpu/loop.py (host syncs, validation share, sweep workers),
bench/gpu/decoding.py (beam search beside ESPnet's); bench/gpu/data.py makes their synthetic clips.
Wheels for a GPU machine without network: scripts/gpu_wheels.sh (README, "GPU check").
"""
