"""Synthetic lip-reading clips in the user's format: `NNNNN.mp4` (gray 112x112, 25 fps) + `NNNNN.csv` (`word` rows).

The text is 2 to 6 words of 6 to 24 vocabulary tokens drawn with (smoothed) frequencies like the user's
histogram. Each token is a mouth shape: seven articulation parameters (`SHAPE_DIMS`) from its letter's place
of articulation and its mark (fatha opens, kasra spreads, damma rounds, sukun closes, shadda holds and
stresses, tanween adds a nasal close). The shapes peak on distinct frames and blend into each other
between peaks (coarticulation); the face moves, scales and changes brightness, and noise is added.
Letters that look alike in speech share a shape (b/m, t/d, s/z, the hamza seats), so the mapping from
frames to text is learnable but not trivial.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.config import PROJECT_ROOT
from trainer.io import atomic_write, atomic_write_text
from trainer.text import split_token

SIZE = 112
FPS = 25
MIN_FRAMES, MAX_FRAMES = 29, 38
MIN_TOKENS, MAX_TOKENS = 6, 24
MIN_WORDS, MAX_WORDS = 2, 6
VOCAB = PROJECT_ROOT / "configs" / "vocab" / "vocab.json"
FREQUENCIES = PROJECT_ROOT / "configs" / "vocab" / "token_frequencies.tsv"
ARTICLE = ("ٱ", "لْ")  # the definite article, the usual first two tokens of a word

SHAPE_DIMS = ("open", "width", "round", "teeth", "tongue", "tip", "press")
NEUTRAL = np.array([0.12, 0.5, 0.1, 0.2, 0.0, 0.0, 0.0])

FATHA, DAMMA, KASRA, SUKUN, SHADDA = "\u064e", "\u064f", "\u0650", "\u0652", "\u0651"
TANWEEN = {"\u064b": FATHA, "\u064c": DAMMA, "\u064d": KASRA}
IQLAB = "\u06e2"  # small high meem: the n is said as m

# letter -> (open, width, round, teeth, tongue, tip) and lip closure (which also presses the lips);
# letters on one line share a shape
_PLACES: list[tuple[str, tuple[float, ...], float]] = [
    ("بم", (0.3, 0.5, 0.15, 0.0, 0.0, 0.0), 1.0),  # bilabial
    ("ف", (0.35, 0.55, 0.0, 1.0, 0.0, 0.0), 0.45),  # labiodental: upper teeth on the lower lip
    ("و", (0.3, 0.05, 1.0, 0.0, 0.0, 0.0), 0.0),  # rounded
    ("ث", (0.4, 0.6, 0.0, 0.8, 0.3, 1.0), 0.0),  # interdental: tongue tip between the teeth
    ("ذ", (0.45, 0.6, 0.0, 0.6, 0.3, 0.8), 0.0),
    ("ظ", (0.4, 0.5, 0.4, 0.8, 0.3, 1.0), 0.0),  # emphatic: velarised, so the lips round
    ("ت", (0.35, 0.6, 0.0, 0.9, 0.5, 0.0), 0.0),  # dental stops
    ("د", (0.45, 0.6, 0.0, 0.7, 0.5, 0.0), 0.0),
    ("ة", (0.5, 0.65, 0.0, 0.9, 0.2, 0.0), 0.0),
    ("طض", (0.35, 0.5, 0.4, 0.9, 0.5, 0.0), 0.0),
    ("ن", (0.3, 0.5, 0.0, 0.6, 0.85, 0.0), 0.0),
    ("ل", (0.55, 0.6, 0.0, 0.3, 1.0, 0.0), 0.0),
    ("ر", (0.45, 0.4, 0.35, 0.3, 0.6, 0.0), 0.0),
    ("س", (0.1, 0.85, 0.0, 1.0, 0.0, 0.0), 0.0),  # sibilants: teeth together, lips spread
    ("ز", (0.2, 0.8, 0.0, 1.0, 0.2, 0.0), 0.0),
    ("ص", (0.15, 0.65, 0.4, 1.0, 0.0, 0.0), 0.0),
    ("ش", (0.3, 0.3, 0.65, 0.8, 0.0, 0.0), 0.0),  # postalveolar: lips pushed out
    ("ج", (0.35, 0.4, 0.45, 1.0, 0.3, 0.0), 0.0),
    ("ك", (0.55, 0.5, 0.1, 0.35, 0.0, 0.0), 0.0),  # velar
    ("ق", (0.65, 0.45, 0.3, 0.2, 0.0, 0.0), 0.0),  # uvular
    ("خ", (0.6, 0.35, 0.35, 0.1, 0.0, 0.0), 0.0),
    ("غ", (0.6, 0.35, 0.35, 0.1, 0.35, 0.0), 0.0),
    ("ع", (0.8, 0.5, 0.0, 0.0, 0.25, 0.0), 0.0),  # pharyngeal
    ("ح", (0.75, 0.7, 0.0, 0.25, 0.0, 0.0), 0.0),
    ("ه", (0.65, 0.7, 0.0, 0.15, 0.0, 0.0), 0.0),  # glottal
    ("ءأإؤئ", (0.5, 0.5, 0.0, 0.55, 0.0, 0.0), 0.0),  # glottal stop: the seat is spelling, not sound
    ("اىآ", (1.0, 0.7, 0.0, 0.5, 0.0, 0.0), 0.0),  # long a
    ("ٱ", (0.4, 0.8, 0.0, 0.0, 0.45, 0.0), 0.0),  # wasla: a lax, wide, half-open mouth
    ("ي", (0.3, 1.0, 0.0, 0.4, 0.0, 0.0), 0.0),  # long i: spread
]
PLACE = {letter: (np.array([*shape, closure]), closure) for letters, shape, closure in _PLACES for letter in letters}

VOWEL = {  # (open, width, round) a mark pulls the mouth towards
    FATHA: (0.85, 0.6, 0.0),
    KASRA: (0.25, 1.0, 0.0),
    DAMMA: (0.3, 0.1, 1.0),
}
NASAL = np.array([0.15, 0.5, 0.1, 0.6, 0.8, 0.0, 0.0])  # the n that tanween adds


@dataclass(frozen=True)
class Articulation:
    """How one token moves the mouth: its key shapes (one per peak frame) and how many frames its first key holds."""

    keys: tuple[np.ndarray, ...]
    hold: int = 1


def articulation(token: str) -> Articulation:
    """The mouth shapes of one vocabulary token (letter + marks) from its place of articulation and its marks."""
    letter, marks = split_token(token)
    base_letter = unicodedata.normalize("NFC", letter)
    if base_letter not in PLACE:
        raise ValueError(f"no place of articulation for letter '{base_letter}' of token '{token}'")
    place, closure = PLACE[base_letter]
    if IQLAB in marks:
        place, closure = PLACE["م"]
    shape = place.copy()
    vowel = next((m for m in marks if m in VOWEL), None) or next((TANWEEN[m] for m in marks if m in TANWEEN), None)
    if vowel is not None:
        shape[:3] = 0.45 * place[:3] + 0.55 * np.array(VOWEL[vowel])
    if SUKUN in marks:
        shape[0] *= 0.4
    shape[0] *= 1.0 - 0.7 * closure
    hold = 1
    if SHADDA in marks:  # geminate: held longer and said harder
        shape = np.clip(NEUTRAL + 1.25 * (shape - NEUTRAL), 0.0, 1.0)
        hold = 2
    if base_letter == "آ":
        hold = 2
    keys = (shape, NASAL) if any(m in TANWEEN for m in marks) else (shape,)
    return Articulation(keys, hold)


# ---------------------------------------------------------------------------------------------- text


def load_vocab(path: Path = VOCAB) -> list[str]:
    """Tokens in id order (id = index + 1)."""
    mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    return [t for t, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def token_weights(tokens: Sequence[str], path: Path = FREQUENCIES, alpha: float = 0.85) -> np.ndarray:
    """Sampling probabilities: (count + 1) ** alpha from the histogram, so rare tokens still appear sometimes."""
    counts: dict[str, int] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines()[1:]:
        token, count = line.split("\t")
        counts[unicodedata.normalize("NFC", token)] = int(count)
    w = np.array([(counts.get(unicodedata.normalize("NFC", t), 0) + 1.0) ** alpha for t in tokens])
    w[[i for i, t in enumerate(tokens) if t == ARTICLE[0]]] = 0.0  # wasla only starts an article
    return w / w.sum()


def sample_words(rng: np.random.Generator, tokens: Sequence[str], weights: np.ndarray) -> list[list[str]]:
    """2 to 6 words, 6 to 24 tokens in all (mean about 14), each word at least 2 tokens."""
    n_tokens = int(np.clip(round(rng.normal(14.2, 4.0)), MIN_TOKENS, MAX_TOKENS))
    n_words = int(rng.integers(MIN_WORDS, min(MAX_WORDS, n_tokens // 2) + 1))
    spare = n_tokens - 2 * n_words  # tokens beyond 2 a word, spread by stars and bars
    cuts = np.sort(rng.choice(spare + n_words - 1, n_words - 1, replace=False))
    sizes = 2 + np.diff(np.concatenate([[-1], cuts, [spare + n_words - 1]])) - 1
    words = []
    for size in sizes:
        article = bool(size >= 3 and rng.random() < 0.45)
        body = rng.choice(len(tokens), int(size) - 2 * article, p=weights)
        words.append([*ARTICLE] * article + [tokens[i] for i in body])
    return words


# ---------------------------------------------------------------------------------------------- frames


def _key_shapes(arts: Sequence[Articulation], budget: int) -> tuple[list[np.ndarray], list[int], list[int]]:
    """The key shapes in order, each one's hold, and the index of each token's first key; a token's extra keys
    are blended into its first while there are more keys than the `budget` frames."""
    n_extra = sum(len(a.keys) - 1 for a in arts)
    keys: list[np.ndarray] = []
    holds: list[int] = []
    first: list[int] = []
    for a in arts:
        first.append(len(keys))
        if len(a.keys) > 1 and len(arts) + n_extra > budget:
            keys.append(0.6 * a.keys[0] + 0.4 * a.keys[1])
            holds.append(a.hold)
            n_extra -= len(a.keys) - 1
            continue
        keys.append(a.keys[0])
        holds.append(a.hold)
        for extra in a.keys[1:]:
            keys.append(extra)
            holds.append(1)
    return keys, holds, first


def timeline(arts: Sequence[Articulation], n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mouth parameters of every frame (n_frames, len(SHAPE_DIMS)) and the peak frame of each token (len(arts),).

    Each key shape peaks on its own frame and blends into the next between peaks (coarticulation).

    Every token gets at least one peak frame; a shadda or long vowel holds its peak a frame longer and a
    tanween adds a nasal key when frames allow (else the nasal is blended into the vowel's peak). The
    frames left over widen random gaps between peaks, and a rest (neutral mouth) of 0 to 2 frames opens
    and closes the clip.
    """
    if len(arts) > n_frames:
        raise ValueError(f"{len(arts)} tokens do not fit in {n_frames} frames")
    rest = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    while len(arts) > n_frames - sum(rest):
        rest[int(np.argmax(rest))] -= 1
    budget = n_frames - sum(rest)
    keys, holds, first = _key_shapes(arts, budget)
    gaps = np.array(holds) - 1  # extra frames after each peak: the holds first, then the slack
    while gaps.sum() > budget - len(keys):
        gaps[np.flatnonzero(gaps)[-1]] -= 1
    held = gaps > 0
    slack = budget - len(keys) - int(gaps.sum())
    gaps = gaps + rng.multinomial(slack, np.full(len(keys), 1.0 / len(keys)))
    positions = rest[0] + np.concatenate([[0], np.cumsum(1 + gaps[:-1])])  # peak frame of each key
    shapes = np.stack(keys)
    shapes[:-1] = 0.85 * shapes[:-1] + 0.15 * shapes[1:]  # anticipation: a peak leans towards the next shape
    xs = [positions, positions[held] + 1]
    ys = [shapes, shapes[held]]
    if rest[0]:
        xs.insert(0, np.array([0]))
        ys.insert(0, NEUTRAL[None])
    if rest[1]:
        xs.append(np.array([n_frames - 1]))
        ys.append(NEUTRAL[None])
    x = np.concatenate(xs).astype(float)
    y = np.concatenate(ys)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    peaks = positions[first]
    if len(x) == 1:
        return np.repeat(y, n_frames, axis=0), peaks
    t = np.arange(n_frames, dtype=float)
    seg = np.clip(np.searchsorted(x, t, side="right") - 1, 0, len(x) - 2)
    frac = np.clip((t - x[seg]) / np.maximum(x[seg + 1] - x[seg], 1e-9), 0.0, 1.0)
    frac = frac * frac * (3.0 - 2.0 * frac)  # smoothstep: the mouth slows down at each shape
    return y[seg] + frac[:, None] * (y[seg + 1] - y[seg]), peaks


def _ellipse(u: np.ndarray, v: np.ndarray, cu, cv, a, b) -> np.ndarray:
    """Anti-aliased coverage (0..1) of the ellipse centred (cu, cv) with half-axes a, b; all (F, 1, 1) or scalars.

    q = du^2 + dv^2 is 1 on the edge; (q - 1) / |grad q| is the distance to it in pixels, to first order.
    """
    du, dv = (u - cu) / a, (v - cv) / b
    q = du * du + dv * dv
    grad = 2.0 * np.sqrt((du / a) ** 2 + (dv / b) ** 2) + 1e-6
    return np.clip(0.5 - (q - 1.0) / grad, 0.0, 1.0)


@dataclass(frozen=True)
class Nuisance:
    """How much of what is not speech goes into the clips: multipliers of the default amounts (0 turns one off)."""

    motion: float = 1.0  # head shift (2 px a clip, 0.3 px a frame), scale (+-8 %), rotation (3 degrees, 0.25 a frame)
    lighting: float = 1.0  # brightness gain (+-25 %) and offset, skin and lip tone
    noise: float = 1.0  # pixel noise (1 % to 4 % of full scale)
    speaker: float = 1.0  # per-clip mouth opening, width and teeth scale, per-frame shape jitter


def render(params: np.ndarray, rng: np.random.Generator, nuisance: Nuisance = Nuisance()) -> np.ndarray:
    """Mouth parameters (F, len(SHAPE_DIMS)) -> gray frames (F, 112, 112) uint8 with head motion, lighting and noise."""
    F = len(params)
    mo, li = nuisance.motion, nuisance.lighting
    p = {name: params[:, i, None, None].astype(np.float32) for i, name in enumerate(SHAPE_DIMS)}  # each (F, 1, 1)

    def walk(scale: float, step: float) -> np.ndarray:  # a per-clip offset plus a per-frame random walk, (F, 1, 1)
        return (rng.normal(0.0, scale) + np.cumsum(rng.normal(0.0, step, F)))[:, None, None].astype(np.float32)

    cx, cy = SIZE / 2 + mo * walk(2.0, 0.3), SIZE / 2 + 4 + mo * walk(2.0, 0.3)
    scale = np.float32(1.0 + mo * rng.uniform(-0.08, 0.08)) * np.exp(mo * walk(0.0, 0.006))
    angle = np.deg2rad(mo * walk(3.0, 0.25))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * cos + (yy - cy) * sin) / scale  # (F, 112, 112) face coordinates, pixels
    v = (-(xx - cx) * sin + (yy - cy) * cos) / scale

    skin = 0.6 + li * rng.uniform(-0.06, 0.06)
    img = skin + 0.0012 * v - 0.1 * _ellipse(u, v, 0.0, -50.0, 26.0, 10.0)  # shading, nostril shadow
    # the mouth is drawn inside a window holding it in every frame
    reach = scale.max() * (37.0 * np.abs(sin).max() + 24.0) + 2.0, scale.max() * 37.0 + 2.0
    r0, r1 = int(max(cy.min() - reach[0], 0)), int(min(cy.max() + reach[0] + 1, SIZE))
    c0, c1 = int(max(cx.min() - reach[1], 0)), int(min(cx.max() + reach[1] + 1, SIZE))
    u, v, win = u[:, r0:r1, c0:c1], v[:, r0:r1, c0:c1], img[:, r0:r1, c0:c1]

    a_out = 26.0 + 10.0 * p["width"] - 7.0 * p["round"]
    b_out = 11.0 + 9.0 * p["open"] + 3.0 * p["round"] - 3.0 * p["press"]
    lips = _ellipse(u, v, 0.0, 0.0, a_out, b_out)
    lip_tone = np.where(v < 0, 0.36, 0.44) + 0.1 * p["press"] + li * rng.uniform(-0.04, 0.04)
    win += lips * (lip_tone - win)
    a_in = a_out * (0.82 - 0.4 * p["round"])
    b_in = 0.8 + 13.0 * p["open"]
    mouth = _ellipse(u, v, 0.0, 0.0, a_in, b_in)
    win += mouth * (0.08 - win)
    teeth_top = -b_in + 0.5 + p["teeth"] * np.minimum(4.5, 1.6 * b_in)
    win += mouth * np.clip(teeth_top - v, 0.0, 1.0) * (0.88 - win)
    teeth_low = b_in - 0.5 - p["teeth"] * np.minimum(2.5, 0.8 * b_in) * (p["teeth"] > 0.5)
    win += mouth * np.clip(v - teeth_low, 0.0, 1.0) * (0.8 - win)
    tongue_v = b_in * (0.75 - 0.55 * p["tongue"])
    win += mouth * _ellipse(u, v, 0.0, tongue_v, 0.6 * a_in, 0.05 + 0.55 * b_in * p["tongue"]) * (0.5 - win)
    win += _ellipse(u, v, 0.0, 0.0, 9.0, 0.05 + 4.0 * p["tip"]) * p["tip"] * (0.58 - win)

    gain = (1.0 + li * rng.uniform(-0.25, 0.25)) * (1.0 + li * rng.normal(0.0, 0.02, (F, 1, 1)))
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(nuisance.noise * rng.uniform(0.01, 0.04))
    img = img * gain.astype(np.float32) + np.float32(li * rng.uniform(-0.08, 0.08)) + noise
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    words: list[list[str]]  # tokens of each word
    frames: np.ndarray  # (T, 112, 112) uint8

    @property
    def tokens(self) -> list[str]:
        return [t for w in self.words for t in w]

    @property
    def text(self) -> list[str]:
        return ["".join(w) for w in self.words]


def make_clip(
    rng: np.random.Generator, tokens: Sequence[str], weights: np.ndarray, nuisance: Nuisance = Nuisance()
) -> Clip:
    """One random clip: its words and frames (29 to 38)."""
    words = sample_words(rng, tokens, weights)
    arts = [articulation(t) for w in words for t in w]
    n_frames = int(MIN_FRAMES + min(rng.geometric(0.35) - 1, MAX_FRAMES - MIN_FRAMES))  # mean about 30.9
    params, _ = timeline(arts, n_frames, rng)
    sp = nuisance.speaker
    speaker = 1.0 + sp * np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1), 0, rng.uniform(-0.2, 0), 0, 0, 0])
    params = np.clip(params * speaker + sp * rng.normal(0.0, 0.02, params.shape), 0.0, 1.0)
    return Clip(words, render(params, rng, nuisance))


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Gray frames (T, H, W) uint8 -> H.264 yuv420p .mp4 (the gray image is the Y plane)."""
    import av

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "superfast", "threads": "1"}
            for frame in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray").reformat(format="yuv420p")
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    atomic_write(path, write)


def write_npy(path: Path, frames: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, frames)

    atomic_write(path, write)


def write_dataset(
    out: str | Path,
    clips: int,
    seed: int = 0,
    fmt: str = "mp4",
    vocab: Path = VOCAB,
    frequencies: Path = FREQUENCIES,
    alpha: float = 0.85,
    nuisance: Nuisance = Nuisance(),
    on_clip: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write `clips` clips as `out/NNNNN.{mp4,npy}` + `out/NNNNN.csv`; clip i depends only on (seed, i). Returns the videos.

    `on_clip(video)` is called after each clip is written (a progress bar).
    """
    if fmt not in ("mp4", "npy"):
        raise ValueError(f"format must be mp4 or npy, got {fmt!r}")
    if clips < 1:
        raise ValueError(f"clips must be at least 1, got {clips}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokens = load_vocab(vocab)
    weights = token_weights(tokens, frequencies, alpha)
    paths = []
    for i in range(clips):
        clip = make_clip(np.random.default_rng([seed, i]), tokens, weights, nuisance)
        video = out / f"{i:05d}.{fmt}"
        (write_mp4 if fmt == "mp4" else write_npy)(video, clip.frames)
        atomic_write_text(out / f"{i:05d}.csv", "word\n" + "".join(w + "\n" for w in clip.text))
        paths.append(video)
        if on_clip is not None:
            on_clip(video)
    return paths
