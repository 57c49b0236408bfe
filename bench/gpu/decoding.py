"""The beam-search row of the GPU check: lipsweep's search beside ESPnet's, on the same weights and encoder outputs.

bench/search.py does the timing (`compare`): lipsweep's batched search at each batch size, auto_avsr's
copy of ESPnet's `BatchBeamSearch` one utterance at a time (`--auto-avsr DIR`) and espnet 202611's
`BatchBeamSearch` on padded batches (`--espnet DIR`), each checked for the same best hypotheses.
"""

from __future__ import annotations

from bench.gpu.harness import FAILED, NA, Context, Report
from trainer.search import SearchOptions

BEAM, CTC_WEIGHT = 40, 0.1


def search_row(ctx: Context, report: Report) -> None:
    from bench import search as bench_search

    s = ctx.sizes
    setting = f"beam search, {s.config} config (random weights), beam {BEAM}, CTC {CTC_WEIGHT}"
    if ctx.auto_avsr is None:
        report.add(f"{setting}: auto_avsr's search, one utterance at a time", "not run: give --auto-avsr DIR", NA)
    if ctx.espnet is None:
        report.add(f"{setting}: ESPnet 202611's batched search", "not run: give --espnet DIR", NA)
    model, encs = bench_search.base_model(s.search_utterances, s.config)
    options = SearchOptions(beam_size=BEAM, ctc_weight=CTC_WEIGHT)

    def emit(t) -> None:
        what = {"lipsweep": "lipsweep", "ESPnet 202611": "ESPnet 202611 (batched)"}.get(t.search, "auto_avsr's ESPnet")
        text = f"{1000 * t.per_utt_s:,.1f} ms/utterance"
        if t.search != "ESPnet (measured)" and t.speedup == t.speedup:  # NaN without an ESPnet reference
            text += f" ({t.speedup:.1f}x ESPnet one by one)"
        text += f"; {t.check}" if t.check else ""
        status = FAILED if "DIFFERENT" in t.check else "ok"
        report.add(f"{setting}: {what}, batch {t.batch}", text, status, ms_per_utt=1000 * t.per_utt_s, check=t.check)
        ctx.check_time(f"beam search, {t.search} at batch {t.batch}")

    bench_search.compare(
        f"{s.config} config", model, encs, options, str(ctx.device), list(s.search_batches),
        auto_avsr=ctx.auto_avsr, espnet_dir=ctx.espnet, espnet_utterances=s.espnet_utterances, emit=emit,
    )  # fmt: skip
