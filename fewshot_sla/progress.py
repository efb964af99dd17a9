"""Progress bars that suit where they are written: a live tqdm bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with ``\\r``: on a terminal that is one line updated in place, but in a log file (a
redirected ``stderr``, a batch job, ``sla-grid``'s run logs) every redraw stays, and a 15-epoch run writes
megabytes of bar frames. :func:`progress_bar` gives tqdm only to a terminal; elsewhere a :class:`LogBar`, which
writes one plain line (no ``\\r``, no escape codes) at most every ``interval`` seconds and one when it closes. The
engine and the image decoders take their bars from here.

:func:`phase` writes one line when a step of a run without a bar starts (loading data, a validation, the test) and
one with its duration when it ends; :func:`exclude` keeps such a step out of a bar's rate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

__all__ = ["progress_bar", "LogBar", "LOG_INTERVAL", "is_terminal", "phase", "Phase", "exclude"]

T = TypeVar("T")

#: Seconds between two lines of a bar written to a log.
LOG_INTERVAL = 30.0


def is_terminal(file: IO[str] | Any) -> bool:
    """Whether ``file`` is an interactive terminal (a file without ``isatty`` is not)."""
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LogBar:
    """A progress bar for logs: one plain line every ``interval`` seconds (tqdm's ``update``, ``set_postfix``,
    ``close`` and iteration, without the redraws).

    A line reads ``desc: n/total (pct%) elapsed H:MM:SS, left H:MM:SS, R s/unit, key=value``. It is written
    when ``interval`` seconds have passed since the previous line (checked at each update, so a line may wait
    for the next update), and at :meth:`close` when the bar has already written one or ``leave`` is set, unless the
    last line written already shows the final count (a bar's 100% line is written once): a short
    bar with ``leave=False`` (an inner bar, a quick decode) writes nothing.

    Args:
        iterable: what iterating the bar yields (optional: :meth:`update` by hand).
        desc: the label at the start of each line.
        total: the expected count (default ``len(iterable)`` when it has one).
        initial: the count already done (a resumed run).
        unit: what is counted, for the rate.
        leave: write a last line at :meth:`close` even if the bar has written none.
        disable: write nothing at all.
        file: where the lines go (default ``sys.stderr`` at the time of writing).
        interval: seconds between two lines (:data:`LOG_INTERVAL`).
        clock: the time source, in seconds (``time.monotonic``; a test passes its own).
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str = "",
        total: int | None = None,
        initial: int = 0,
        unit: str = "it",
        leave: bool = True,
        disable: bool = False,
        file: IO[str] | None = None,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]  # as tqdm
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n, self.initial, self.leave, self.disable = initial, initial, leave, disable
        self.file, self.interval, self.clock = file, float(interval), clock
        self.postfix = ""
        self.lines = 0
        self.excluded = 0.0  # seconds kept out of the rate (:meth:`exclude`)
        self._written: int | None = None  # the count of the last line written
        self.closed = False
        self.start = self.last = clock()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogBar: nothing to iterate (pass an iterable, or call update())")
        for item in self.iterable:
            yield item
            self.update()
        self.close()  # as tqdm: an exhausted bar closes itself

    def __enter__(self) -> LogBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; write a line if ``interval`` seconds have passed since the last one."""
        self.n += n
        if not self.disable and self.clock() - self.last >= self.interval:
            self._write()

    def exclude(self, seconds: float) -> None:
        """Keep ``seconds`` (a validation between two updates) out of the elapsed time and the rate."""
        self.excluded += seconds

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Show ``key=value`` pairs at the end of the following lines (``refresh`` is tqdm's; lines keep their
        rate either way)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def format(self) -> str:
        """The line the bar would write now (without the newline)."""
        elapsed = self.clock() - self.start - self.excluded
        done = self.n - self.initial
        parts = [f"{self.desc}: " if self.desc else "", f"{self.n}"]
        if self.total:
            parts.append(f"/{self.total} ({100 * self.n / self.total:.0f}%)")
        parts.append(f" elapsed {_clock(elapsed)}")
        if done > 0 and elapsed > 0:
            per = elapsed / done
            if self.total and self.n < self.total:
                parts.append(f", left {_clock(per * (self.total - self.n))}")
            parts.append(f", {per:.3g} s/{self.unit}" if per >= 1 else f", {1 / per:.3g} {self.unit}/s")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def _write(self) -> None:
        f = self.file if self.file is not None else sys.stderr
        f.write(self.format() + "\n")
        f.flush()
        self.lines += 1
        self.last = self.clock()
        self._written = self.n

    def close(self) -> None:
        """Write the last line (see the class docstring); later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        # the last update may have written the final count already (it does when the last unit, or a validation
        # after it, took longer than ``interval``): that line is not written twice
        if not self.disable and (self.leave or self.lines) and self.n != self._written:
            self._write()


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    initial: int = 0,
    unit: str = "it",
    leave: bool = True,
    enabled: bool = True,
    file: IO[str] | None = None,
    mininterval: float = 1.0,
    interval: float = LOG_INTERVAL,
) -> Any:
    """A progress bar over ``iterable`` (or updated by hand): tqdm on a terminal, a :class:`LogBar` elsewhere.

    Args:
        iterable: what iterating the bar yields.
        desc, total, initial, unit, leave: as in tqdm.
        enabled: False: a bar that shows nothing (iterating still yields ``iterable``).
        file: where the bar goes (default ``sys.stderr``); whether it is a terminal picks the kind of bar.
        mininterval: seconds between two redraws of the terminal bar.
        interval: seconds between two lines of the log bar.

    Returns:
        an object with tqdm's ``__iter__``, ``update``, ``set_postfix``, ``close`` and context manager.
    """
    out = file if file is not None else sys.stderr
    if enabled and is_terminal(out):
        from tqdm import tqdm  # here: importing the core does not import tqdm

        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, leave=leave, file=out,
                    mininterval=mininterval, dynamic_ncols=True)
    return LogBar(iterable, desc=desc, total=total, initial=initial, unit=unit, leave=leave, disable=not enabled,
                  file=file, interval=interval)


def exclude(bar: Any, seconds: float) -> None:
    """Keep ``seconds`` spent outside the bar's work (a validation between two steps) out of its elapsed time and
    rate: a :class:`LogBar`'s or a tqdm bar's (whose clocks are moved on by ``seconds``); anything else is left."""
    if isinstance(bar, LogBar):
        bar.exclude(seconds)
    elif hasattr(bar, "start_t") and hasattr(bar, "last_print_t"):  # tqdm: its average and smoothed rates
        bar.start_t += seconds
        bar.last_print_t += seconds


class Phase:
    """What :func:`phase` hands its block: ``result`` and ``note`` finish the closing line; ``seconds`` is the
    duration once the block has ended."""

    def __init__(self) -> None:
        self.result = "done"
        self.note = ""
        self.seconds = 0.0


@contextmanager
def phase(name: str, what: str, *, enabled: bool = True, file: IO[str] | None = None,
          clock: Callable[[], float] = time.monotonic) -> Iterator[Phase]:
    """One line when a step of a run starts and one when it ends, with its duration::

        data: loading tiny-imagenet from DIR ...
        data: N images (N1 train, N2 val, N3 test) in S s (decoded, cached in DIR/.fewshot_sla_cache)

    A block that raises writes no closing line.

    Args:
        name: the step (``data``, ``validation``, ``test``), at the start of both lines.
        what: what it does, for the first line.
        enabled: False: write nothing (another rank than 0; the duration is still measured).
        file: where the lines go (default ``sys.stderr``).
        clock: the time source, in seconds.

    Yields:
        a :class:`Phase`: set ``result`` (default ``done``) and ``note`` (in brackets) for the closing line.
    """
    p = Phase()

    def write(line: str) -> None:
        if enabled:
            f = file if file is not None else sys.stderr
            f.write(line + "\n")
            f.flush()

    write(f"{name}: {what} ...")
    start = clock()
    try:
        yield p
    finally:
        p.seconds = clock() - start
    write(f"{name}: {p.result} in {p.seconds:.1f} s" + (f" ({p.note})" if p.note else ""))
