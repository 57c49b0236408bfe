"""Progress of a step that takes more than a few seconds: a tqdm bar on a terminal, elsewhere (Kaggle logs, a
pipe, a file) one status line at most every 30 s, so a log shows that the step is alive without filling up."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

STATUS_EVERY = 30.0  # seconds between two status lines without a terminal


class Progress:
    """`update()` after each item; `with Progress(...) as p:` closes the bar. `log` gets the status lines."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "clip",
        log: Callable[[str], None] | None = None,
        stream: TextIO | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit, self.clock = total, desc, unit, clock
        self.every = STATUS_EVERY if every is None else every
        self.stream = stream if stream is not None else sys.stderr
        self.log = log if log is not None else (lambda line: print(line, file=self.stream, flush=True))
        self.done = 0
        self.start = self.last = clock()
        terminal = getattr(self.stream, "isatty", lambda: False)()
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False) if terminal else None

    def update(self, n: int = 1, status: str = "") -> None:
        """`n` more items done; `status` (e.g. "best 0.41") goes beside the count."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if status:
                self.bar.set_postfix_str(status, refresh=False)
            return
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.log(self.line(status))

    def line(self, status: str = "") -> str:
        """'decoding clips: 120/800 clips, 31 s, 3.9 clips/s'."""
        elapsed = self.clock() - self.start
        rate = f", {self.done / elapsed:.1f} {self.unit}s/s" if elapsed > 0 else ""
        extra = f", {status}" if status else ""
        return f"{self.desc}: {self.done}/{self.total} {self.unit}s, {elapsed:.0f} s{rate}{extra}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
