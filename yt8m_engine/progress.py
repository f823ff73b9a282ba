"""Progress of long work, one way for every verb: totals, rate and ETA on a terminal (a tqdm bar on
stderr); a plain line every `PLAIN_SECONDS` when stderr is a file or a pipe (a log); nothing with
--quiet. The CLI sets LEVEL from --quiet / --verbose; library calls default to quiet-on-no-terminal.
"""
from __future__ import annotations

import os
import sys
import time

QUIET, NORMAL, VERBOSE = 0, 1, 2
LEVEL = NORMAL
PLAIN_SECONDS = float(os.environ.get("YT8M_PROGRESS_SECONDS", "30"))


def info(msg: str) -> None:
    """A line of information on stderr (not with --quiet)."""
    if LEVEL >= NORMAL:
        print(msg, file=sys.stderr, flush=True)


def debug(msg: str) -> None:
    """A line only with --verbose."""
    if LEVEL >= VERBOSE:
        print(msg, file=sys.stderr, flush=True)


class Progress:
    """progress = Progress("infer", total=bytes, unit="B"); progress.update(done, videos=...); progress.close().

    `update` takes the amount done so far (not an increment) and named counts shown beside it.
    enabled=False (or --quiet) shows nothing.
    """

    def __init__(self, what: str, total: float | None = None, unit: str = "it", enabled: bool = True):
        self.what, self.total, self.unit = what, total, unit
        self.enabled = enabled and LEVEL >= NORMAL
        self.t0 = self.last = time.perf_counter()
        self.done = 0.0
        self.counts: dict = {}
        self.printed = None  # the amount the last plain line showed
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, unit_scale=unit == "B", unit_divisor=1000,
                            dynamic_ncols=True, leave=True, file=sys.stderr, mininterval=0.5)

    def update(self, done: float, **counts) -> None:
        if not self.enabled:
            return
        self.counts.update(counts)
        if self.bar is not None:
            self.bar.update(done - self.done)
            self.done = done
            if counts:
                self.bar.set_postfix({k: v for k, v in self.counts.items()}, refresh=False)
            return
        self.done = done
        now = time.perf_counter()
        if now - self.last >= PLAIN_SECONDS:
            self.last, self.printed = now, self.done
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        el = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / el
        done = f"{self.done / 1e6:.1f} MB" if self.unit == "B" else f"{self.done:.0f} {self.unit}"
        parts = [f"{self.what}: {done}"]
        if self.total:
            parts[0] += f" of {self.total / 1e6:.1f} MB" if self.unit == "B" else f" of {self.total:.0f}"
            parts.append(f"{100 * self.done / self.total:.0f}%")
        parts.append(f"{rate / 1e6:.1f} MB/s" if self.unit == "B" else f"{rate:.1f} {self.unit}/s")
        parts += [f"{k} {v}" for k, v in self.counts.items()]
        if self.total and rate > 0:
            parts.append(f"ETA {max(0.0, (self.total - self.done) / rate):.0f} s")
        return ", ".join(parts)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        elif time.perf_counter() - self.t0 >= PLAIN_SECONDS and self.printed != self.done:  # a log's last line
            print(self.line(), file=sys.stderr, flush=True)
        self.enabled = False
