"""A thin wrapper over rich's progress bar so library code reports progress without owning the UI."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressReporter:
    def __init__(self, enabled: bool = True):
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            if enabled
            else None
        )

    @property
    def enabled(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> ProgressReporter:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.stop()

    def add(self, description: str, total: int) -> int:
        return self._progress.add_task(description, total=total) if self._progress else 0

    def advance(self, task: int, amount: int = 1) -> None:
        if self._progress:
            self._progress.advance(task, amount)
