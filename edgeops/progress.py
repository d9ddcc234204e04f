"""Progress of long work (DP-SGD and reference epochs, federated rounds, the pipeline's Dagster runs (one per target:
its compression, benchmark and robustness), simulated drift batches), reported
once and shown where someone is looking: asset bodies already send each step's message to the Dagster log; the CLI
listens here and draws a bar per task in the terminal.

Reports reach listeners in the same process: with the embedded in-process executor, that is `edgeops run` itself.
Steps on celery workers report to their own Dagster logs, which the UI shows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

Listener = Callable[[str, int, int, str], None]  # task, done, total, detail
_listeners: list[Listener] = []
_lock = threading.Lock()


def advance(task: str, done: int, total: int, detail: str = "") -> None:
    """`done` of `total` units of `task` are complete. Listeners that fail are dropped, never the work."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(task, done, total, detail)
        except Exception:
            with _lock:
                if listener in _listeners:
                    _listeners.remove(listener)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)


@contextlib.contextmanager
def terminal_bars(enabled: bool = True) -> Iterator[None]:
    """One rich progress bar per task, on stderr; finished bars stay, so the terminal keeps a record of the run."""
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(task: str, done: int, total: int, detail: str) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total, detail="")
        bars.update(tasks[task], completed=done, total=total, detail=detail[:60])

    with bars, listening(update):
        yield
