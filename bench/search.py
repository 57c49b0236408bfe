"""Beam-search speed: utterances/s and time per utterance, beam 40 / CTC weight 0.1, against ESPnet's BatchBeamSearch.

    python bench/search.py [--auto-avsr DIR] [--device cpu|cuda] [--threads 2] [--batch-sizes 1,8,32] [--clock wall|cpu] [--repeats 3]

Models: `small`, auto_avsr's reference small model (../shared/reference/auto_avsr_small, its three
utterances' encoder outputs repeated), and `base`, configs/base.yaml's model (768 dims, 6 decoder
blocks) with random weights and random encoder outputs of 29-38 frames. `--auto-avsr DIR` (a
checkout of github.com/mpc001/auto_avsr) also runs ESPnet's own search, one utterance at a time as
auto_avsr decodes, on the same encoder outputs and weights, and checks that both find the same best
hypotheses. Without it the ESPnet figures of issue 4 (0.26 s small, 2.2 s base) are printed for reference.
`--clock cpu` times with the process's CPU time instead of the wall clock: steadier on a machine that
other jobs share (use it with `--threads 1`; with more threads, waiting threads count too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.config import DecoderConfig, EncoderConfig, FrontendConfig, ModelConfig, load_config  # noqa: E402
from trainer.decoding import decode  # noqa: E402
from trainer.model import LipReader  # noqa: E402
from trainer.search import SearchOptions  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference" / "auto_avsr_small"
ISSUE_ESPNET_S = {"small": 0.26, "base": 2.2}  # per utterance, auto_avsr's code, 2 CPU threads, 30 frames
ODIM = 228
CLOCK = time.perf_counter


def small_model() -> tuple[LipReader, list[torch.Tensor]]:
    """The reference small model and its three utterances' encoder outputs."""
    expected = json.loads((REFERENCE / "expected.json").read_text())
    c = expected["config"]
    cfg = ModelConfig(
        frontend=FrontendConfig(c["frontend_widths"]),
        encoder=EncoderConfig(c["adim"], c["aheads"], c["eunits"], c["elayers"], c["cnn_module_kernel"]),
        decoder=DecoderConfig(c["ddim"], c["dheads"], c["dunits"], c["dlayers"]),
    )
    model = LipReader(cfg, c["odim"])
    model.load_state_dict(torch.load(REFERENCE / "model.pth", weights_only=True))
    tensors = torch.load(REFERENCE / "tensors.pt", weights_only=True)
    return model.eval(), [tensors[f"encoder.{i}"] for i in range(len(expected["lengths"]))]


def base_model(count: int) -> tuple[LipReader, list[torch.Tensor]]:
    """configs/base.yaml's model, random weights, and `count` random encoder outputs of 29-38 frames."""
    torch.manual_seed(0)
    model = LipReader(load_config(str(ROOT / "configs" / "base.yaml")).model, ODIM).eval()
    lengths = torch.randint(29, 39, (count,)).tolist()
    return model, [torch.randn(n, model.cfg.encoder.dim) for n in lengths]


def ours(
    model: LipReader, encs: list[torch.Tensor], batch_size: int, options: SearchOptions, device: str
) -> tuple[float, list]:
    """Seconds for all utterances in batches of `batch_size`, and the best yseq of each."""
    best = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    sync()
    start = CLOCK()
    for i in range(0, len(encs), batch_size):
        chunk = [e.to(device) for e in encs[i : i + batch_size]]
        enc = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
        lengths = torch.tensor([len(e) for e in chunk], device=device)
        best += [h[0].yseq for h in decode(model, enc, lengths, options)]
    sync()
    return CLOCK() - start, best


def espnet(
    auto_avsr: Path, model: LipReader, encs: list[torch.Tensor], options: SearchOptions, device: str
) -> tuple[float, list]:
    """ESPnet's BatchBeamSearch as auto_avsr's `get_beam_search_decoder` builds it, one utterance at a time."""
    sys.path.insert(0, str(auto_avsr))
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.pytorch_backend.ctc import CTC
    from espnet.nets.pytorch_backend.decoder.transformer_decoder import TransformerDecoder
    from espnet.nets.scorers.ctc import CTCPrefixScorer
    from espnet.nets.scorers.length_bonus import LengthBonus

    dec_cfg = model.cfg.decoder
    decoder = TransformerDecoder(
        odim=ODIM,
        attention_dim=dec_cfg.dim,
        attention_heads=dec_cfg.heads,
        linear_units=dec_cfg.ffn_dim,
        num_blocks=dec_cfg.layers,
    )
    decoder.load_state_dict(model.decoder.state_dict())
    ctc = CTC(ODIM, model.cfg.encoder.dim, 0.1, reduce=True)
    ctc.load_state_dict(model.ctc.state_dict())
    scorers = {
        "decoder": decoder.eval(),
        "ctc": CTCPrefixScorer(ctc.eval(), ODIM - 1),
        "length_bonus": LengthBonus(ODIM),
    }
    weights = {"decoder": 1.0 - options.ctc_weight, "ctc": options.ctc_weight, "length_bonus": options.penalty}
    search = BatchBeamSearch(
        scorers, weights, beam_size=options.beam_size, vocab_size=ODIM, sos=ODIM - 1, eos=ODIM - 1,
        pre_beam_score_key=None if options.ctc_weight == 1.0 else "decoder",
    ).to(device).eval()  # fmt: skip
    best = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    sync()
    start = CLOCK()
    with torch.no_grad():
        for enc in encs:
            best.append(search(enc.to(device), maxlenratio=0.0, minlenratio=0.0)[0].yseq.tolist())
    sync()
    return CLOCK() - start, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auto-avsr", type=Path, help="a checkout of auto_avsr: also time ESPnet's own search")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--utterances", type=int, default=32)
    parser.add_argument("--espnet-utterances", type=int, default=6, help="utterances ESPnet decodes (it is slow)")
    parser.add_argument("--models", default="small,base")
    parser.add_argument("--beam-size", type=int, default=40)
    parser.add_argument("--ctc-weight", type=float, default=0.1)
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="cpu: the process's CPU time (CPU only)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="time each row this many times, keep the fastest")
    args = parser.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if args.device != "cpu":
            parser.error("--clock cpu measures CPU time: use it with --device cpu")
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    options = SearchOptions(beam_size=args.beam_size, ctc_weight=args.ctc_weight)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(
        f"beam {options.beam_size}, ctc_weight {options.ctc_weight}, {args.utterances} utterances, {name}, "
        f"{args.clock} clock, fastest of {args.repeats}"
    )
    print(f"{'model':<6} {'search':<18} {'batch':>5} {'utt/s':>8} {'ms/utt':>8} {'speed-up':>9}")
    for which in args.models.split(","):
        if which == "small":
            if not REFERENCE.exists():
                print(f"small: {REFERENCE} absent, skipped")
                continue
            model, refs = small_model()
            encs = [refs[i % len(refs)] for i in range(args.utterances)]
        else:
            model, encs = base_model(args.utterances)
        model = model.to(args.device)
        ours(model, encs[:2], 2, options, args.device)  # warm-up
        if args.auto_avsr:
            utts = encs[: args.espnet_utterances]
            runs = [espnet(args.auto_avsr, model, utts, options, args.device) for _ in range(args.repeats)]
            seconds, espnet_best = min(runs, key=lambda r: r[0])
            reference_s = seconds / len(espnet_best)
            print(
                f"{which:<6} {'ESPnet (measured)':<18} {1:>5} {1 / reference_s:>8.2f} {1000 * reference_s:>8.1f} {1.0:>9.1f}"
            )
        else:
            espnet_best, reference_s = None, ISSUE_ESPNET_S[which]
            print(
                f"{which:<6} {'ESPnet (issue 4)':<18} {1:>5} {1 / reference_s:>8.2f} {1000 * reference_s:>8.1f} {1.0:>9.1f}"
            )
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            runs = [ours(model, encs, batch_size, options, args.device) for _ in range(args.repeats)]
            seconds, best = min(runs, key=lambda r: r[0])
            per_utt = seconds / len(encs)
            print(
                f"{which:<6} {'lipsweep':<18} {batch_size:>5} {1 / per_utt:>8.2f} {1000 * per_utt:>8.1f} {reference_s / per_utt:>9.1f}"
            )
            if espnet_best is not None and best[: len(espnet_best)] != espnet_best:
                print(f"  warning: best hypotheses differ from ESPnet's at batch {batch_size}")


if __name__ == "__main__":
    main()
