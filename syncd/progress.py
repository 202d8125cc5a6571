"""A live progress display for reconciles on a terminal (rich).

One bar: files and bytes done (of the total when the plan's totals are known),
percent, rate, time left, and the names last handled. Log lines written while it
is live land above it (stderr is redirected through the display), so nothing tears it.

The engine reports its totals and each finished action, with its path and size,
through ``syncd.engine.progress.Progress``; a reconcile run by the daemon reports them
over the control socket (``syncd.daemon.control``), to the same display.
"""

from __future__ import annotations

import atexit
import time
from collections import deque
from collections.abc import Iterable

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from syncd.engine.progress import Action
from syncd.textsafe import visible
from syncd.units import human_bytes

# How many names the display shows under the bar.
NAMES_SHOWN = 3


def clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-:--"
    s = int(seconds + 0.5)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class _Counts(ProgressColumn):
    """``120/300 files  1.2/3.4 MB  40%``; without totals, what is done so far."""

    def __init__(self, owner: LiveProgress) -> None:
        super().__init__()
        self._owner = owner

    def render(self, task: Task) -> Text:
        o = self._owner
        if o.total_files is None:
            return Text(f"{o.files} files  {human_bytes(o.bytes)}")
        pct = 100.0 * o.files / o.total_files if o.total_files else 100.0
        return Text(
            f"{o.files}/{o.total_files} files  "
            f"{human_bytes(o.bytes)}/{human_bytes(o.total_bytes or 0)}  {pct:3.0f}%"
        )


class _Rate(ProgressColumn):
    """``35 files/s  2.1 MB/s  ETA 0:05``: averages since the first action."""

    def __init__(self, owner: LiveProgress) -> None:
        super().__init__()
        self._owner = owner

    def render(self, task: Task) -> Text:
        o = self._owner
        return Text(f"{o.rate_text()}  ETA {clock(o.eta())}", style="progress.data.speed")


class _Display(Progress):
    def __init__(self, owner: LiveProgress, console: Console) -> None:
        self._owner = owner  # before the base class, which renders once at creation
        super().__init__(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            _Counts(owner),
            _Rate(owner),
            console=console,
            transient=False,
            refresh_per_second=8,
            redirect_stdout=False,
            redirect_stderr=True,
        )

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        names = self._owner.recent_names()
        if names:
            yield Text("  " + "  ".join(names), style="dim", overflow="ellipsis", no_wrap=True)


class LiveProgress:
    """A ``Progress`` that draws the bar; ``close`` ends the display."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True) -> None:
        self.files = 0
        self.bytes = 0
        self.deletes = 0
        self.total_files: int | None = None
        self.total_bytes: int | None = None
        self._names: deque[str] = deque(maxlen=NAMES_SHOWN)
        self._first: float | None = None
        self._display: _Display | None = None
        if enabled:
            self._display = _Display(self, console or Console(stderr=True))
            self._task = self._display.add_task("sync", total=None)
            self._display.start()
            # A run that ends by an exception must still give the terminal its cursor back.
            atexit.register(self.close)

    # -- fed by the engine

    def done(self, action: Action, path: str, size: int) -> None:
        self._start_clock()
        if action == "delete":
            self.deletes += 1
        else:
            self.files += 1
            self.bytes += size
        name = visible(path)
        if not self._names or self._names[-1] != name:  # folded events repeat a name
            self._names.append(name)
        self._refresh()

    def planned(self, files: int, size: int) -> None:
        """Totals of the plan about to run (uploads and adoptions, and their bytes)."""
        self.total_files, self.total_bytes = files, size
        self._refresh()

    def close(self) -> None:
        if self._display is not None:
            display, self._display = self._display, None
            if self.total_files is None:  # the final frame shows a full bar
                self.total_files, self.total_bytes = self.files, self.bytes
            self._names.clear()  # the summary, printed next, says what happened
            self._refresh_task(display)
            display.stop()

    # -- what the columns show

    def recent_names(self) -> list[str]:
        return list(self._names)

    def elapsed(self) -> float:
        return 0.0 if self._first is None else time.monotonic() - self._first

    def rate_text(self) -> str:
        t = self.elapsed()
        if t <= 0:
            return "-- files/s"
        return f"{self.files / t:.1f} files/s  {human_bytes(self.bytes / t)}/s"

    def eta(self) -> float | None:
        t = self.elapsed()
        if self.total_files is None or not self.files or t <= 0:
            return None
        return (self.total_files - self.files) * t / self.files

    def _start_clock(self) -> None:
        if self._first is None:
            self._first = time.monotonic()

    def _refresh(self) -> None:
        if self._display is not None:
            self._refresh_task(self._display)

    def _refresh_task(self, display: _Display) -> None:
        done = self.files
        total = self.total_files
        description = "sync" if not self.deletes else f"sync, {self.deletes} deleted"
        display.update(self._task, completed=done, total=total, description=description)
