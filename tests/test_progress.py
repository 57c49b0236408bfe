"""trainer.progress: a bar on a terminal, a status line at most every 30 s elsewhere."""

from __future__ import annotations

import io

from trainer.progress import STATUS_EVERY, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_one_status_line_at_most_every_30_s() -> None:
    now = [0.0]
    lines: list[str] = []
    p = Progress(100, "decoding clips", log=lines.append, stream=io.StringIO(), clock=lambda: now[0])
    for t in [1, 10, 29, 31, 45, 60, 62, 200]:
        now[0] = t
        p.update(status="best 0.41" if t == 200 else "")
    assert STATUS_EVERY == 30.0
    assert lines == [
        "decoding clips: 4/100 clips, 31 s, 0.1 clips/s",
        "decoding clips: 7/100 clips, 62 s, 0.1 clips/s",
        "decoding clips: 8/100 clips, 200 s, 0.0 clips/s, best 0.41",
    ]


def test_on_a_terminal_a_bar_and_no_status_lines() -> None:
    screen = Terminal()
    lines: list[str] = []
    now = [0.0]
    with Progress(3, "data synth", log=lines.append, stream=screen, clock=lambda: now[0]) as p:
        for _ in range(3):
            now[0] += 40
            p.update()
    assert lines == [] and "data synth:   0%" in screen.getvalue() and "/3 [" in screen.getvalue()  # a tqdm bar
