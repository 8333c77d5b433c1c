"""Terminal output that cannot stop a run: writes that survive a closed pipe, progress bars, notices.

`zerotir train ... 2>&1 | tee log` and Ctrl-C kills `tee` first: every later write to stdout/stderr
raises `BrokenPipeError`. If that happens inside the training loop (a progress-bar refresh, a log
line), the stop never reaches its checkpoint. Here a failed write sends that stream to /dev/null
(the file descriptor too, so the interpreter's final flush is quiet) and the program keeps going.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

EXIT_OK = 0
"""Finished."""
EXIT_USER_ERROR = 2
"""Bad input (config, data, model path, arguments): one line on stderr, nothing was started."""
EXIT_SANDBOX_ABORT = 3
"""Too many sandbox infrastructure failures in a step: the run stopped (fix the sandbox, then --resume)."""
EXIT_SIGNAL = 130
"""Stopped by SIGINT/SIGTERM after saving a checkpoint (continue with --resume)."""


class SafeStream(io.TextIOBase):
    """A text stream that forwards to `target` until a write or flush fails (closed pipe, full
    disk, revoked terminal), then drops everything instead of raising."""

    def __init__(self, target: TextIO):
        self._target: TextIO | None = target
        self.broken = False

    def _fail(self) -> None:
        t, self._target, self.broken = self._target, None, True
        try:  # point the descriptor at /dev/null: buffered bytes and the exit-time flush then succeed
            fd = t.fileno() if t is not None else -1
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def write(self, s: str) -> int:
        if self._target is not None:
            try:
                self._target.write(s)
            except (OSError, ValueError):
                self._fail()
        return len(s)

    def flush(self) -> None:
        if self._target is not None:
            try:
                self._target.flush()
            except (OSError, ValueError):
                self._fail()

    def isatty(self) -> bool:
        try:
            return self._target is not None and self._target.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self._target is None:
            raise io.UnsupportedOperation("stream closed (broken pipe)")
        return self._target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"


def _safe(stream: Any) -> SafeStream:
    return stream if isinstance(stream, SafeStream) else SafeStream(stream)


def install() -> None:
    """Make `sys.stdout` / `sys.stderr` safe (the CLI calls this first, before logging is set up)."""
    sys.stdout = _safe(sys.stdout)
    sys.stderr = _safe(sys.stderr)


def progress_file() -> SafeStream:
    """Where progress bars write: stderr, made safe (also when zerotir is used as a library, where
    `sys.stderr` itself is left alone)."""
    return _safe(sys.stderr)


def progress(iterable=None, **kw):
    """A tqdm bar on the safe stderr; `disable` defaults to off."""
    from tqdm import tqdm

    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, file=progress_file(), **kw)


def notice(msg: str) -> None:
    """A message on its own line even while a progress bar is drawn (safe in a signal handler:
    no locks, no logging machinery)."""
    f = progress_file()
    f.write(f"\n{msg}\n")
    f.flush()


def error_line(msg: str) -> None:
    """`zerotir: error: ...` on stderr, one line per user error; a message that already names its
    command (`zerotir train: ...`) reads `zerotir train: error: ...`, not `zerotir: error: zerotir train:`."""
    cmd, sep, rest = msg.partition(": ")
    if sep and cmd.startswith("zerotir "):
        print(f"{cmd}: error: {rest}", file=sys.stderr)
    else:
        print(f"zerotir: error: {msg}", file=sys.stderr)


@contextmanager
def stop_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Route SIGTERM/SIGINT to `handler` inside the block and restore the old handlers after it
    (a no-op off the main thread, where signals cannot be set)."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        try:
            signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for s, h in old.items():
            try:
                signal.signal(s, h)
            except ValueError:
                pass
