"""One progress display for every long job (eval, compare, rerank, batch): rich, on stderr.

A bar shows the count done, the total, the elapsed time and an ETA. It is drawn only when
standard error is a terminal, so logs, pipes and CI stay clean; a command's ``--no-progress``
(``enabled=False`` here) or the environment variable ``ERANK_NO_PROGRESS=1`` turns it off.

>>> from erank.progress import progress_bar
>>> with progress_bar(3, "scoring", enabled=False) as bar:
...     for _ in range(3):
...         bar.advance()
>>> bar.completed
3
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

__all__ = ["ProgressBar", "progress_bar", "progress_status", "progress_enabled"]

_ENV = "ERANK_NO_PROGRESS"


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
    ) -> None:
        self.total = total
        self.completed = 0
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
            self._progress = Progress(*columns, console=Console(stderr=True), transient=True)

        self._description = description

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self.total)
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

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress_bar(
    total: int | None, description: str, *, unit: str = "", enabled: bool | None = None
) -> ProgressBar:
    """A :class:`ProgressBar` of ``total`` units (``None``: unknown total, no ETA).

    ``enabled=None`` (the default) draws it only when stderr is a terminal and progress is not
    disabled; ``False`` never draws it.
    """
    return ProgressBar(total, description, unit=unit, enabled=enabled)


def progress_status(description: str, *, enabled: bool | None = None) -> ProgressBar:
    """A spinner with the elapsed time, for a step of unknown length (loading a model, converting a
    GGUF file once): drawn under the same conditions as :func:`progress_bar`."""
    return ProgressBar(None, description, enabled=enabled, status=True)
