"""The prelude: Python text that runs in the execution's process before the user's block.

It writes the request's files into the working directory, points `sys.stdin` at the request's
stdin, and replays a session's earlier blocks. The fork server runs it as its "setup" (stdout
hidden, exceptions swallowed), then compiles the new block on its own, so the block keeps its own
line numbers and may start with `from __future__`.

Replay is faithful where Python's own randomness is concerned: every block of a stateful session
runs after `random.seed(s)` (and numpy's global seed) with `s` derived from the session's blocks up
to and including it, so a replayed block draws the very numbers it drew the first time. Each
replayed block is compiled alone, as it was first run; its output is hidden at the descriptor
level (subprocesses too); `os._exit` and `sys.exit` end only that block, so a block that exited
cannot end every later call of the session. Not reproduced: wall-clock time, `os.urandom`,
`secrets`, and anything outside the process (files a block wrote are gone: each call has a fresh
directory).
"""

from __future__ import annotations

import hashlib
import posixpath

from zerotir.sandbox.types import ExecRequest

__all__ = ["build_prelude", "block_seeds", "check_files"]

_PRELUDE = """\
def __zerotir_prelude(files, stdin, blocks, seeds):
    import os, posix, random, sys
    g = globals()
    for name, data in files:
        d = os.path.dirname(name)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(name, "wb") as f:
            f.write(data)
    if stdin is not None:
        import io
        sys.stdin = io.StringIO(stdin)

    def seed(s):
        random.seed(s)
        np = sys.modules.get("numpy")
        if np is not None:
            np.random.seed(s & 0xFFFFFFFF)

    def stop(status=0):
        raise SystemExit(status)

    if blocks:
        saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        real_exit, err = os._exit, sys.stderr
        os._exit = posix._exit = stop
        try:
            for block, s in zip(blocks, seeds):
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(null, 1)
                os.dup2(null, 2)
                sys.stderr = sys.stdout
                seed(s)
                try:
                    exec(compile(block, "<replay>", "exec"), g)
                except BaseException:
                    pass
        finally:
            try:
                sys.stdout.flush()
            except Exception:
                pass
            os._exit = posix._exit = real_exit
            sys.stderr = err
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (*saved, null):
                os.close(fd)
    if seeds:
        seed(seeds[-1])


__zerotir_prelude({files!r}, {stdin!r}, {blocks!r}, {seeds!r})
del __zerotir_prelude
"""


def block_seeds(replay: tuple[str, ...], code: str) -> list[int]:
    """One seed per block of a stateful call (the replayed ones, then the new one): a hash of the
    session's blocks up to and including it, so a block gets the same seed every time it runs."""
    h = hashlib.sha256()
    seeds = []
    for block in (*replay, code):
        h.update(block.encode("utf-8", "surrogatepass") + b"\0")
        seeds.append(int.from_bytes(h.copy().digest()[:8], "little"))
    return seeds


def check_files(files: tuple[tuple[str, bytes], ...]) -> None:
    """Reject file names that would land outside the execution's working directory."""
    for name, _ in files:
        norm = posixpath.normpath(name)
        if not name or name.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in name:
            raise ValueError(f"file name must be a relative path inside the working directory: {name!r}")


def build_prelude(req: ExecRequest) -> str | None:
    """The setup text for one request, or None when it needs none (a stateless call with no files
    and no stdin: the fast path costs nothing)."""
    if req.replay is None and not req.files and req.stdin is None:
        return None
    check_files(req.files)
    replay = req.replay or ()
    seeds = block_seeds(replay, req.code) if req.replay is not None else []
    return _PRELUDE.format(files=list(req.files), stdin=req.stdin, blocks=list(replay), seeds=seeds)
