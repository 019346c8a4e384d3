"""Progress bars for long stages (rich): description, bar, count, rate and ETA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, in the bar's own unit."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True, unit: str = "it") -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, **fields)`; shows a bar on stderr when enabled, silent otherwise."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    columns = (
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: str) -> None:
            info: dict[str, Any] = {"info": " ".join(f"{k} {v}" for k, v in fields.items())} if fields else {}
            bar.update(task, advance=n, **info)

        yield advance
