"""One progress display for every long job (eval, compare, rerank, batch, train sft/rl): rich, on stderr.

A bar shows the count done, the total, the elapsed time and an ETA. It is drawn only when
standard error is a terminal, so logs, pipes and CI stay clean; a command's ``--no-progress``
(``enabled=False`` here) or the environment variable ``ERANK_NO_PROGRESS=1`` turns it off.

>>> from erank.progress import progress_bar
>>> with progress_bar(3, "scoring", enabled=False) as bar:
...     for _ in range(3):
...         bar.advance()
>>> bar.completed
3
>>> bar.status_text().split("  ")[0]
'3/3'
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any

__all__ = ["ProgressBar", "progress_bar", "progress_status", "progress_enabled"]

_ENV = "ERANK_NO_PROGRESS"
#: Seconds of recent progress the ETA's rate is taken from (rich's default, 30 s, leaves no ETA
#: at all when one unit, a training step, takes longer than about 15 s).
_SPEED_WINDOW_S = 600.0


def progress_enabled() -> bool:
    """Whether a progress bar would be drawn: standard error is a terminal and none is disabled."""
    if os.environ.get(_ENV, "") not in ("", "0"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class ProgressBar:
    """A rich progress bar (count, elapsed, ETA) on stderr, or nothing when disabled.

    Use it as a context manager; :meth:`advance` counts units done. ``completed`` counts them
    either way, so callers can report totals without a bar.
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        *,
        unit: str = "",
        enabled: bool | None = None,
        status: bool = False,
        completed: int = 0,
    ) -> None:
        self.total = total
        self.completed = completed
        self.enabled = progress_enabled() if enabled is None else bool(enabled)
        self._progress: Any = None
        self._task: Any = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns: list[ProgressColumn] = (
                [SpinnerColumn(), TextColumn("[progress.description]{task.description}"), TimeElapsedColumn()]
                if status
                else [
                    TextColumn("[progress.description]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn(unit),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                ]
            )
            self._progress = Progress(
                *columns,
                console=Console(stderr=True),
                transient=True,
                speed_estimate_period=_SPEED_WINDOW_S,
            )

        self._description = description
        self._unit = unit
        self._started_at = completed
        self._t0 = time.monotonic()

    def __enter__(self) -> ProgressBar:
        self._t0 = time.monotonic()
        if self._progress is not None:
            self._progress.start()
            # units done before (a resumed job) count neither for the rate nor the ETA
            self._task = self._progress.add_task(
                self._description, total=self.total, completed=self.completed
            )
        return self

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def update(self, *, completed: int | None = None, total: int | None = None) -> None:
        """Set the count done and/or the total (a job that learns its size once it starts)."""
        if total is not None:
            self.total = total
        if completed is not None:
            self.completed = completed
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.completed, total=self.total)

    def describe(self, description: str) -> None:
        """Change the text in front of the bar (the current stage of a job)."""
        self._description = description
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description)

    def status_text(self) -> str:
        """The bar as text for a log line: ``12/100 steps  elapsed 1m02s  ETA 7m35s`` (the ETA from
        this run's rate; a resumed job's earlier units do not count)."""
        elapsed = time.monotonic() - self._t0
        done = self.completed - self._started_at
        count = f"{self.completed}/{self.total}" if self.total is not None else str(self.completed)
        text = f"{count}{' ' + self._unit if self._unit else ''}  elapsed {_minutes(elapsed)}"
        if self.total is not None and done > 0:
            text += f"  ETA {_minutes(elapsed / done * max(self.total - self.completed, 0))}"
        return text

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _minutes(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_bar(
    total: int | None,
    description: str,
    *,
    unit: str = "",
    enabled: bool | None = None,
    completed: int = 0,
) -> ProgressBar:
    """A :class:`ProgressBar` of ``total`` units (``None``: unknown total, no ETA).

    ``enabled=None`` (the default) draws it only when stderr is a terminal and progress is not
    disabled; ``False`` never draws it. ``completed``: units already done when the bar starts (a
    resumed job); the ETA comes from the rate of this run's units only.
    """
    return ProgressBar(total, description, unit=unit, enabled=enabled, completed=completed)


def progress_status(description: str, *, enabled: bool | None = None) -> ProgressBar:
    """A spinner with the elapsed time, for a step of unknown length (loading a model, converting a
    GGUF file once): drawn under the same conditions as :func:`progress_bar`."""
    return ProgressBar(None, description, enabled=enabled, status=True)
