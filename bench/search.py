"""Beam-search speed: utterances/s and time per utterance, beam 40 / CTC weight 0.1, against ESPnet's BatchBeamSearch.

    python bench/search.py [--auto-avsr DIR] [--device cpu|cuda] [--threads 2] [--batch-sizes 1,8,32] [--clock wall|cpu] [--repeats 3]

Models: `small`, auto_avsr's reference small model (../shared/reference/auto_avsr_small, its three
utterances' encoder outputs repeated), and `base`, configs/base.yaml's model (768 dims, 6 decoder
blocks) with random weights and random encoder outputs of 29-38 frames. `--auto-avsr DIR` (a
checkout of github.com/mpc001/auto_avsr) also runs ESPnet's own search, one utterance at a time as
auto_avsr decodes, on the same encoder outputs and weights, and checks that both find the same best
hypotheses. Without it the ESPnet figures of issue 4 (0.26 s small, 2.2 s base) are printed for reference.
`--espnet DIR` (a folder holding espnet 202611's `espnet2`, e.g. its wheel unzipped; `typeguard` importable)
also runs that release's `BatchBeamSearch`, which decodes a padded batch of utterances at once, at each
batch size, with lipsweep's decoder and CTC weights loaded as they are into its `TransformerDecoder` and
`CTC`, and checks the same best hypotheses.
`--clock cpu` times with the process's CPU time instead of the wall clock: steadier on a machine that
other jobs share (use it with `--threads 1`; with more threads, waiting threads count too).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
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


def base_model(count: int, config: str = "base") -> tuple[LipReader, list[torch.Tensor]]:
    """configs/base.yaml's model (or `config`'s), random weights, and `count` random encoder outputs of 29-38 frames."""
    torch.manual_seed(0)
    model = LipReader(load_config(config).model, ODIM).eval()
    lengths = torch.randint(29, 39, (count,)).tolist()
    return model, [torch.randn(n, model.cfg.encoder.dim) for n in lengths]


def ours(
    model: LipReader, encs: list[torch.Tensor], batch_size: int, options: SearchOptions, device: str
) -> tuple[float, list]:
    """Seconds for all utterances in batches of `batch_size`, and the best yseq of each."""

    def run() -> list:
        best = []
        for i in range(0, len(encs), batch_size):
            enc, lengths = padded(encs[i : i + batch_size], device)
            best += [h[0].yseq for h in decode(model, enc, lengths, options)]
        return best

    return timed(device, run)


def padded(encs: list[torch.Tensor], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs (T_i, D) as one padded batch (B, T, D) on `device` and their lengths (B,)."""
    chunk = [e.to(device) for e in encs]
    return torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True), torch.tensor([len(e) for e in chunk], device=device)


def timed(device: str, run: Callable[[], list]) -> tuple[float, list]:
    """CLOCK seconds of `run()` (the device synchronised before and after) without autograd, and its result."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    sync()
    start = CLOCK()
    with torch.no_grad():
        result = run()
    sync()
    return CLOCK() - start, result


def use_auto_avsr_espnet(auto_avsr: Path) -> None:
    """Make `espnet` auto_avsr's copy of it, a folder without __init__.py (a namespace package).

    A regular `espnet` package anywhere on sys.path (espnet 202611 installs one, holding only `__init__.py`)
    would otherwise win over it, wherever auto_avsr stands in sys.path.
    """
    folder = str(Path(auto_avsr).resolve() / "espnet")
    if not Path(folder, "nets", "batch_beam_search.py").exists():
        raise FileNotFoundError(f"{auto_avsr}: no espnet/nets/batch_beam_search.py; pass a checkout of auto_avsr")
    current = sys.modules.get("espnet")
    if current is None or list(getattr(current, "__path__", [])) != [folder]:
        for name in [m for m in sys.modules if m == "espnet" or m.startswith("espnet.")]:
            del sys.modules[name]
        package = types.ModuleType("espnet")
        package.__path__ = [folder]
        sys.modules["espnet"] = package


def espnet_search(search_cls, ctc_scorer_cls, length_bonus_cls, decoder, ctc, options: SearchOptions, device: str):
    """An ESPnet BatchBeamSearch (auto_avsr's copy or espnet 202611's) over lipsweep's decoder and CTC weights."""
    scorers = {
        "decoder": decoder.eval(),
        "ctc": ctc_scorer_cls(ctc.eval(), ODIM - 1),
        "length_bonus": length_bonus_cls(ODIM),
    }
    weights = {"decoder": 1.0 - options.ctc_weight, "ctc": options.ctc_weight, "length_bonus": options.penalty}
    return search_cls(
        scorers, weights, beam_size=options.beam_size, vocab_size=ODIM, sos=ODIM - 1, eos=ODIM - 1,
        pre_beam_score_key=None if options.ctc_weight == 1.0 else "decoder",
    ).to(device).eval()  # fmt: skip


def espnet(
    auto_avsr: Path, model: LipReader, encs: list[torch.Tensor], options: SearchOptions, device: str
) -> tuple[float, list]:
    """ESPnet's BatchBeamSearch as auto_avsr's `get_beam_search_decoder` builds it, one utterance at a time."""
    use_auto_avsr_espnet(auto_avsr)
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
    search = espnet_search(BatchBeamSearch, CTCPrefixScorer, LengthBonus, decoder, ctc, options, device)
    return timed(device, lambda: [search(e.to(device), maxlenratio=0.0, minlenratio=0.0)[0].yseq.tolist() for e in encs])


def espnet_batched(
    espnet_dir: Path, model: LipReader, encs: list[torch.Tensor], batch_size: int, options: SearchOptions, device: str
) -> tuple[float, list]:
    """espnet 202611's BatchBeamSearch on padded batches of `batch_size` utterances (its `x_lengths` input)."""
    if str(espnet_dir) not in sys.path:
        sys.path.append(str(espnet_dir))  # only its espnet2 is imported: `espnet` stays auto_avsr's
    from espnet2.asr.ctc import CTC
    from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
    from espnet2.legacy.nets.batch_beam_search import BatchBeamSearch
    from espnet2.legacy.nets.scorers.ctc import CTCPrefixScorer
    from espnet2.legacy.nets.scorers.length_bonus import LengthBonus

    dec_cfg = model.cfg.decoder
    decoder = TransformerDecoder(
        vocab_size=ODIM, encoder_output_size=dec_cfg.dim, attention_heads=dec_cfg.heads,
        linear_units=dec_cfg.ffn_dim, num_blocks=dec_cfg.layers, use_flash_attn=False,
    )  # fmt: skip
    decoder.load_state_dict(model.decoder.state_dict())
    ctc = CTC(ODIM, model.cfg.encoder.dim)
    ctc.load_state_dict(model.ctc.state_dict())
    search = espnet_search(BatchBeamSearch, CTCPrefixScorer, LengthBonus, decoder, ctc, options, device)

    def run() -> list:
        best = []
        for i in range(0, len(encs), batch_size):
            x, lengths = padded(encs[i : i + batch_size], device)  # (B, T, D), (B,)
            nbest = search(x, maxlenratio=0.0, minlenratio=0.0, x_lengths=lengths)
            best += [hyps[0].yseq.tolist() for hyps in nbest]
        return best

    return timed(device, run)


def same_best(best: list, reference: list | None, against: str) -> str:
    """'same best hypotheses as X for n of n utterances' (or DIFFERENT), '' without a reference."""
    if reference is None:
        return ""
    n = min(len(best), len(reference))
    same = sum(a == b for a, b in zip(best[:n], reference[:n], strict=True))
    return f"{'same' if same == n else 'DIFFERENT'} best hypotheses as {against} for {same} of {n} utterances"


@dataclass
class Timing:
    """One line of the table: a search at a batch size, its time per utterance and its check."""

    model: str
    search: str  # lipsweep | ESPnet (measured) | ESPnet (issue 4) | ESPnet 202611
    batch: int
    per_utt_s: float
    speedup: float  # against ESPnet one utterance at a time (auto_avsr's search)
    check: str = ""  # same_best's sentence

    def line(self) -> str:
        out = f"{self.model:<6} {self.search:<18} {self.batch:>5} {1 / self.per_utt_s:>8.2f} {1000 * self.per_utt_s:>8.1f} {self.speedup:>9.1f}"
        return out + (f"\n  {self.model} {self.search} batch {self.batch}: {self.check}" if self.check else "")


def fastest(repeats: int, run: Callable[[], tuple[float, list]]) -> tuple[float, list]:
    return min((run() for _ in range(repeats)), key=lambda r: r[0])


def compare(
    which: str, model: LipReader, encs: list[torch.Tensor], options: SearchOptions, device: str, batch_sizes: list[int],
    *, repeats: int = 1, auto_avsr: Path | None = None, espnet_dir: Path | None = None, espnet_utterances: int = 6,
    emit: Callable[[Timing], None] = lambda t: None,
) -> list[Timing]:  # fmt: skip
    """Every search of one model on `encs`; each Timing is passed to `emit` as soon as it is measured."""
    out: list[Timing] = []

    def add(t: Timing) -> None:
        out.append(t)
        emit(t)

    model = model.to(device)
    ours(model, encs[:2], 2, options, device)  # warm-up
    espnet_best = None
    if auto_avsr:
        seconds, espnet_best = fastest(
            repeats, lambda: espnet(auto_avsr, model, encs[:espnet_utterances], options, device)
        )
        reference_s = seconds / len(espnet_best)
        add(Timing(which, "ESPnet (measured)", 1, reference_s, 1.0))
    elif which in ISSUE_ESPNET_S:
        reference_s = ISSUE_ESPNET_S[which]
        add(Timing(which, "ESPnet (issue 4)", 1, reference_s, 1.0))
    else:  # no ESPnet figure for this model: no speed-up
        reference_s = math.nan
    for batch_size in batch_sizes:
        seconds, best = fastest(repeats, lambda b=batch_size: ours(model, encs, b, options, device))
        per_utt = seconds / len(encs)
        add(
            Timing(
                which,
                "lipsweep",
                batch_size,
                per_utt,
                reference_s / per_utt,
                same_best(best, espnet_best, "ESPnet (auto_avsr)"),
            )
        )
        if espnet_dir:
            utts = encs[: max(batch_size, espnet_utterances)]
            seconds, batched = fastest(
                repeats, lambda b=batch_size, u=utts: espnet_batched(espnet_dir, model, u, b, options, device)
            )
            per_utt = seconds / len(utts)
            add(
                Timing(
                    which,
                    "ESPnet 202611",
                    batch_size,
                    per_utt,
                    reference_s / per_utt,
                    same_best(batched, best, "lipsweep"),
                )
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auto-avsr", type=Path, help="a checkout of auto_avsr: also time ESPnet's own search")
    parser.add_argument("--espnet", type=Path, help="espnet 202611 unzipped (its espnet2): time its batched search")
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
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        compare(
            which, model, encs, options, args.device, batch_sizes, repeats=args.repeats, auto_avsr=args.auto_avsr,
            espnet_dir=args.espnet, espnet_utterances=args.espnet_utterances, emit=lambda t: print(t.line(), flush=True),
        )  # fmt: skip


if __name__ == "__main__":
    main()
