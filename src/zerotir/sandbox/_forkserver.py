"""Fork server: the process that runs inside the sandbox and forks one child per execution.

This file is executed as a standalone script (it must not import zerotir: inside the sandbox the
project's files are not visible). It imports the libraries math code uses once, then serves JSON
lines on stdin/stdout: each request is run in a freshly forked child, so a call costs a fork rather
than an interpreter start plus a sympy import, and no state leaks between calls.

Per child: a new session (process group), stdin from /dev/null, stdout/stderr to pipes whose tail is
kept up to a cap, rlimits (CPU seconds, address space, file size, processes), a private temp dir,
and, when the server has CAP_SETUID, a per-slot unprivileged uid so that RLIMIT_NPROC holds and the
whole process tree can be found and killed by uid (a fork bomb that escapes its process group with
setsid() is still swept). Two processes: the zygote, single-threaded, forks every child from an
image that never held a request or an output; the dispatcher, the parent of every child (the zygote
forks them as its siblings), runs an epoll loop on control input, child pipes and pidfds, with one
helper thread that closes finished executions' control sockets; it never forks.
"""

import gc
import importlib
import json
import os
import queue
import re
import resource
import select
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import traceback


def _log(msg):
    try:
        sys.stderr.write(f"[forkserver] {msg}\n")
        sys.stderr.flush()
    except Exception:
        pass


def _vm_size_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_LIBC = []


def _libc():
    """libc through ctypes, loaded once in the server (children inherit it), or None."""
    if not _LIBC:
        try:
            import ctypes

            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except Exception:
            _LIBC.append(None)
    return _LIBC[0]


def _set_child_subreaper():
    libc = _libc()
    return libc is not None and libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


def _name_process(name):
    """Set the process name `ps` and `top` show, so executions can be told apart from their fork
    server (through /proc rather than a ctypes prctl call, which touches ~35 more pages)."""
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
        try:
            os.write(fd, name)
        finally:
            os.close(fd)
    except OSError:
        # Not dumpable and not root: /proc/self/comm belongs to root then; prctl still works.
        libc = _libc()
        if libc is not None:
            libc.prctl(15, name, 0, 0, 0)  # PR_SET_NAME


class _Confinement:
    """What a child does to itself before user code runs, prepared once in the zygote (function
    objects and argument types set up there, so that a child only calls them):

    * its own user, mount and IPC namespaces (unprivileged: a user namespace that maps only its
      own uid), with a private tmpfs of `tmp_bytes` mounted on its temp dir: a quota per execution,
      SysV IPC objects that die with it, and no files to clean up (the kernel frees the tmpfs when
      the execution's last process exits);
    * a Landlock domain of its own that scopes signals and abstract Unix sockets (ABI 6+): no
      signal to, and no abstract-socket connection with, any process outside it (the servers,
      bwrap's pid 1, sibling executions); Landlock also denies ptrace-level access (memory,
      environment, descriptors under /proc) to processes outside the domain;
    * no new privileges, not dumpable, and no capabilities left;
    * a seccomp filter (_seccomp.py) answering EPERM to new namespaces, mounts, ptrace and process
      inspection, keyrings, bpf, perf, userfaultfd, io_uring, modules and other ABIs;
    * inside bubblewrap, every other writable mount of the sandbox (its /tmp, /dev, /proc, the
      cgroup bind) read-only in the execution's own mount namespace (`readonly`), so that its temp
      dir is the only place it can write. Without root all executions share one uid, which owns
      bwrap's /tmp and /dev tmpfs and its pid 1: a file left in /tmp or /dev/shm was read by later
      and concurrent executions, /dev (no size limit) kept memory past the execution, `chmod /tmp`
      made the server's next mkdir fail, and /proc/1/oom_score_adj made bwrap's pid 1 (and with it
      every execution) the OOM killer's first victim. The host's device nodes bwrap binds are
      read-only mounts too (opening one for writing still works); /dev/pts gets a devpts instance
      of the execution's own (`devpts`). A nested user namespace cannot undo it: the kernel locks
      the read-only flag of mounts it copies into a less privileged namespace.
    Each part that the kernel refuses is reported by `probe` in the server's ready line."""

    CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096

    def __init__(self, tmp_bytes, seccomp=True, readonly=(), devpts=False):
        import ctypes

        self.ok = False
        self.seccomp = None  # the filter, where this architecture has one and the probe passed
        self.landlock = 0
        self.namespaces = False
        self.tmp_bytes = tmp_bytes
        # (mount point, its flags to keep): a bind remount must repeat the flags the kernel locked.
        self.readonly = [(path.encode(), flags) for path, flags in readonly]
        # A devpts instance of its own on /dev/pts (bwrap's is one per sandbox, and /dev/ptmx points
        # into it): without it, executions sharing a uid wrote into each other's ptys, one `chmod`
        # of ptmx took ptys from all later ones, and any two could talk through ptys; `max` bounds
        # the ptys one execution can take from the host's shared pool (kernel.pty.max).
        self.devpts = devpts
        libc = _libc()
        if libc is None:
            return
        self.ctypes = ctypes
        self.libc = libc
        libc.syscall.restype = ctypes.c_long
        libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
        self.landlock = abi if abi > 0 else 0
        # struct landlock_ruleset_attr {u64 handled_access_fs, handled_access_net, scoped}: nothing
        # of the filesystem or network (bwrap does that), both scopes.
        self.ll_attr = (ctypes.c_uint64 * 3)(0, 0, 3)
        self.cap_header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        self.cap_data = (ctypes.c_uint32 * 6)()
        if seccomp:
            self.seccomp = _load_seccomp(libc)
        self.ok = True

    def enter(self, uid, tmpdir, namespaces):
        """In the child, after the uid switch. Raises OSError where a step that must work fails.
        Returns a descriptor of the new mount namespace (None without namespaces), see _standby."""
        libc = self.libc
        mnt_ns = None
        if namespaces:
            libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the uid_map of a non-dumpable process is root's
            if libc.unshare(self.CLONE_NEWUSER | self.CLONE_NEWNS | self.CLONE_NEWIPC) != 0:
                raise OSError(self.ctypes.get_errno(), "unshare")
            for name, text in (
                ("uid_map", f"{uid} {uid} 1"),
                ("setgroups", "deny"),
                ("gid_map", f"{uid} {uid} 1"),
            ):
                fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
                try:
                    os.write(fd, text.encode())
                finally:
                    os.close(fd)
            opts = f"size={self.tmp_bytes},mode=0700,uid={uid},gid={uid}".encode()
            if libc.mount(b"tmpfs", tmpdir.encode(), b"tmpfs", self.MS_NOSUID | self.MS_NODEV, opts) != 0:
                raise OSError(self.ctypes.get_errno(), "mount tmpfs")
            pts_opts = b"newinstance,ptmxmode=0666,mode=0620,max=16"
            if self.devpts and libc.mount(
                b"devpts", b"/dev/pts", b"devpts", self.MS_NOSUID | self.MS_NOEXEC, pts_opts
            ):
                raise OSError(self.ctypes.get_errno(), "mount devpts")
            ro = self.MS_REMOUNT | self.MS_BIND | self.MS_RDONLY
            for path, flags in self.readonly:
                if libc.mount(None, path, None, ro | flags, None) != 0:
                    raise OSError(self.ctypes.get_errno(), f"remount {path.decode()} read-only")
            os.chdir(tmpdir)
            mnt_ns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        if self.landlock >= 6:
            fd = libc.syscall(444, self.ll_attr, 24, 0)
            if fd < 0 or libc.syscall(446, fd, 0) != 0:  # landlock_restrict_self
                raise OSError(self.ctypes.get_errno(), "landlock")
            os.close(fd)
        libc.capset(self.cap_header, self.cap_data)  # in a new user namespace a process holds all
        if self.seccomp is not None:
            self.seccomp.install()  # last: the steps above use what it denies
        return mnt_ns


def _writable_mounts(mountinfo="/proc/self/mountinfo"):
    """The writable mounts of this mount namespace that an execution must not write to, as (mount
    point, flags a bind remount must keep): all but devpts (each execution mounts its own). Inside
    bubblewrap: /proc, /dev, /tmp, the cgroup bind and the host's device nodes that bwrap binds
    into /dev (opening one for writing still works on a read-only mount, but an execution running
    as uid 0 owns the host's /dev/null and could chmod it for the whole host); everything else is
    bound read-only already. Mount points are octal-escaped."""
    keep = {
        "nosuid": _Confinement.MS_NOSUID,
        "nodev": _Confinement.MS_NODEV,
        "noexec": _Confinement.MS_NOEXEC,
    }
    out = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            opts = fields[5].split(",")
            fstype = fields[fields.index("-") + 1]
            if "rw" not in opts or fstype == "devpts":
                continue
            try:
                mode = os.stat(point).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) or stat.S_ISCHR(mode):
                out.append((point, sum(v for k, v in keep.items() if k in opts)))
    return out


def _load_seccomp(libc):
    """The seccomp filter of _seccomp.py, which lies beside this script (inside the sandbox too),
    loaded by path: this script's own directory is not on sys.path (and in the package, putting it
    there would shadow the standard library's `types`). None where unavailable."""
    try:
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_seccomp.py")
        spec = importlib.util.spec_from_file_location("_zerotir_seccomp", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        f = mod.Filter(libc)
        return f if f.code is not None else None
    except Exception as e:
        _log(f"no seccomp filter: {e!r}")
        return None


def _collapse_heap_to_huge_pages():
    """Back the pre-imported heap with 2 MiB pages (MADV_COLLAPSE, Linux 6.1+), so that each fork
    copies one page-table entry per 2 MiB instead of 512: fork plus exit of a fresh numpy+sympy
    server drops from ~5 to ~2 ms here. A child's first write into such a page splits only its own
    mapping and copies 4 KiB, as before; regions the server itself keeps writing get split back
    after a fork, the rest stay huge (16 of 44 MiB after a benchmark run). Returns the bytes
    collapsed; 0 where unsupported."""
    libc = _libc()
    if libc is None:
        return 0
    try:
        import ctypes

        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        huge = 2 << 20
        done = 0
        with open("/proc/self/maps") as f:
            maps = f.read().splitlines()
        for line in maps:
            parts = line.split()
            # Private writable anonymous memory and the brk heap: where Python's objects live.
            if parts[1] != "rw-p" or (len(parts) > 5 and parts[5] != "[heap]"):
                continue
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            lo, hi = (lo + huge - 1) & ~(huge - 1), hi & ~(huge - 1)
            if hi > lo:
                libc.madvise(lo, hi - lo, 14)  # MADV_HUGEPAGE: allowed where THP is "madvise"
                if libc.madvise(lo, hi - lo, 25) == 0:  # MADV_COLLAPSE
                    done += hi - lo
        return done
    except Exception:
        return 0


def _plain_fork():
    """Fork through glibc's `_Fork` (2.34+), for a single-threaded server: the child is a normal
    process (glibc updates its thread id), but CPython's after-fork work is skipped. That work
    re-creates thread bookkeeping, locks and the interpreter's thread state, needed only where
    other threads existed; here it touches ~90 pages of the parent's memory in every child (~0.4
    ms of copy-on-write faults, a sixth of a `print` execution). The one Python-level hook that
    matters without threads, reseeding `random`, the child does itself. A fork made by user code
    goes through os.fork and runs every hook as usual. Returns None where unavailable."""
    if threading.active_count() != 1:
        return None
    try:
        import ctypes

        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call
        fork = libc._Fork
    except (AttributeError, OSError):
        return None
    fork.restype = ctypes.c_int
    fork.argtypes = []

    def plain_fork():
        pid = fork()
        if pid < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return pid

    return plain_fork


def _sibling_fork():
    """Fork for the zygote: a raw clone(CLONE_PARENT) whose child is a child of the zygote's parent,
    the dispatcher, so that the dispatcher waits on each execution itself (pidfd, waitpid), as a
    single-process server did, instead of hearing of its exit through one more process wake-up
    and message (the zygote's). The zygote still forks every execution from its clean image.

    Like `_plain_fork`, CPython's after-fork work is skipped; unlike glibc's `_Fork`, the raw
    syscall does not update glibc's thread id in the child's thread descriptor, so the kernel
    writes it there (CLONE_CHILD_SETTID at the field's address, found once and checked by
    the only int equal to the tid in the descriptor); glibc's robust-mutex list, which the kernel
    resets, is registered again by nothing (Python and math libraries use none). Returns None
    where unavailable; a clone that fails at run time falls back to a plain fork (then the
    dispatcher hears of that child's exit from the zygote, as before)."""
    import platform

    nr = {"x86_64": 56, "aarch64": 220}.get(platform.machine())
    if nr is None or threading.active_count() != 1:
        return None
    try:
        import ctypes

        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        libc.pthread_self.restype = ctypes.c_void_p
        self_ptr = libc.pthread_self()
        tid = os.getpid()  # single-threaded: the main thread's tid is the pid
        # glibc's `struct pthread` (at pthread_self(), over 2 KiB long) holds the tid in an int:
        # find the only one equal to it in the descriptor's first KiB.
        words = (ctypes.c_int * 256).from_address(self_ptr)
        hits = [i for i in range(256) if words[i] == tid]
        if len(hits) != 1:
            return None
        tid_addr = self_ptr + 4 * hits[0]
    except (AttributeError, OSError, ValueError):
        return None
    CLONE_PARENT, CLONE_CHILD_SETTID, SIGCHLD = 0x00008000, 0x01000000, 17
    flags = ctypes.c_ulong(CLONE_PARENT | CLONE_CHILD_SETTID | SIGCHLD)
    # x86_64: clone(flags, stack, parent_tid, child_tid, tls); aarch64: (flags, stack, parent_tid, tls, child_tid)
    args = (0, 0, tid_addr, 0) if nr == 56 else (0, 0, 0, tid_addr)
    args = tuple(ctypes.c_ulong(a) for a in args)

    def sibling_fork():
        pid = syscall(ctypes.c_long(nr), flags, *args)
        if pid < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return pid

    return sibling_fork


def _reseed_random(python_random, code):
    """Fresh entropy in a child, as a new interpreter would have: else every execution would draw
    the same "random" numbers. os.fork's hook reseeds `random` (so only without it); nothing
    reseeds numpy's global generator, which costs ~55 copy-on-write faults (a tenth of a numpy
    execution), so only for code that names `random` at all. Library code drawing from numpy's
    global generator unasked (rare in math code) sees the same stream in every execution."""
    if python_random and "random" in sys.modules:
        sys.modules["random"].seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None and "random" in code:
        # An integer seed takes numpy's C path (seed() with no argument costs twice the faults).
        np_random.seed(int.from_bytes(os.urandom(4), "little"))


def _own_children():
    # os.open/os.read rather than listdir and open(): the server's per-request path touches as few
    # Python objects as it can, since each page it touches after a fork is a copy-on-write fault.
    # The server is single-threaded, so its one task is itself.
    pids = []
    try:
        fd = os.open(f"/proc/self/task/{os.getpid()}/children", os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        pids = [int(x) for x in data.split()]
    except OSError:
        pass
    return pids


def _uid_of(pid):
    """A process's real uid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _procs_of_uid(uid):
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(name))
                        break
        except OSError:
            continue
    return pids


CHILD_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


MAX_TIMEOUT_S = 24 * 3600.0


def _checked_timeout(value):
    """A request's timeout as a finite number of seconds in (0, MAX_TIMEOUT_S]; ValueError otherwise
    (NaN, infinities, negative values and non-numbers never reach the loop's poll or the rlimits)."""
    t = float(10.0 if value is None else value)
    if not (t > 0 and t < float("inf")):
        raise ValueError(f"timeout must be a positive finite number of seconds, got {value!r}")
    return min(t, MAX_TIMEOUT_S)


def _remove_tree(path, budget):
    """Delete up to `budget` entries of a directory tree, deepest first, without recursion (a
    3,000-deep tree made Python's rmtree raise RecursionError); returns the budget left, so the
    caller can come back for the rest instead of stalling its loop on 300,000 files."""
    stack = [path]
    while stack and budget > 0:
        top = stack[-1]
        try:
            entries = list(os.scandir(top))
        except OSError:
            entries = []
        sub = []
        for e in entries:
            if budget <= 0:
                break
            try:
                if e.is_dir(follow_symlinks=False):
                    sub.append(e.path)
                else:
                    os.unlink(e.path)
                    budget -= 1
            except OSError:
                budget -= 1
        if sub:
            stack.extend(sub)
            continue
        if budget > 0:
            try:
                os.rmdir(top)
            except OSError:
                pass
            budget -= 1
            stack.pop()
    return budget


def _pack_request(req):
    """The hand-over to a standby child, parsed there with two splits instead of json (whose objects
    the child would otherwise touch, ~40 copy-on-write faults): a header line, then setup and code.
    The child knows its slot and temp dir already (it was prepared for them)."""
    setup = (req.get("setup") or "").encode("utf-8", "surrogatepass")
    code = req["code"].encode("utf-8", "surrogatepass")
    head = f"{len(setup) + len(code)} {_checked_timeout(req.get('timeout'))} {int(req.get('memory_mb', 0))} {len(setup)}\n"
    return head.encode() + setup + code


def _unpack_request(buf):
    line, _, body = buf.partition(b"\n")
    _, timeout, mem, n_setup = line.decode().split(" ", 3)
    n_setup = int(n_setup)
    req = {
        "code": body[n_setup:].decode("utf-8", "surrogatepass"),
        "timeout": float(timeout),
        "memory_mb": int(mem),
    }
    if n_setup:
        req["setup"] = body[:n_setup].decode("utf-8", "surrogatepass")
    return req


def _split_lines(parts, data):
    """The complete lines in `parts` (the pieces of an unfinished line, extended in place) plus
    `data`. Only the new data is searched and each byte is joined once: re-scanning and re-copying
    the whole buffer on every read made a 20 MB request cost seconds of this single-threaded loop."""
    lines = []
    start = 0
    while True:
        nl = data.find(b"\n", start)
        if nl < 0:
            if start < len(data):
                parts.append(data[start:] if start else data)
            return lines
        parts.append(data[start:nl])
        lines.append(b"".join(parts))
        parts.clear()
        start = nl + 1


class Job:
    __slots__ = (
        "rid",
        "slot",
        "pid",
        "pidfd",
        "fds",
        "bufs",
        "nbytes",
        "deadline",
        "start",
        "timed_out",
        "exit_status",
        "tmpdir",
        "cap",
        "finish_by",
        "ctl",
    )


class ForkServer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.slots = int(cfg.get("slots", 4))
        self.uid_base = int(cfg.get("uid_base", 0))
        self.can_setuid = bool(self.uid_base) and os.geteuid() == 0
        self.nproc = int(cfg.get("max_processes", 64))
        self.file_size = int(cfg.get("max_file_bytes", 16 << 20))
        self.default_mem = int(cfg.get("memory_mb", 1024)) << 20
        # Slot ids (a uid and a memory cgroup each) for the running executions and the standby
        # children, which are confined for theirs before a request comes: so that one is ready
        # also when every running slot is busy (else each dispatch at saturation waited for a fork).
        self.standby_target = int(cfg.get("standby", 1))
        self.free_slots = list(range(self.slots + self.standby_target))
        self.pending = []
        self.jobs = {}
        # epoll directly (not `selectors`, whose key objects and lookups touch more memory per
        # event): fd -> (kind, job).
        self.poller = select.epoll()
        self.watch = {}
        self.inbuf = []  # the unfinished request line, in pieces (see _split_lines)
        self.base_vm = 0
        self.huge_bytes = 0
        self.fork = os.fork
        self.tmp_root = cfg.get("tmp_root") or tempfile.gettempdir()
        self.tmp_seq = 0
        # Orphans (double-forked daemons) of any execution are re-parented to this process (the
        # dispatcher, the executions' parent) instead of pid 1, so one read of our own children
        # list finds them all: no /proc scan per execution.
        self.subreaper = _set_child_subreaper()
        # A child forked ahead of time waits for the next request, so a request costs a message, not
        # a fork (~1.5 ms here) plus the new process's first scheduling. The replacement is forked
        # right after dispatch, while the previous child runs.
        self.standby = []  # (pid, control socket, stdout read end, stderr read end, slot, tmpdir)
        self.pid = os.getpid()  # the dispatcher's: the parent of every execution (see main)
        self.zygote = None  # the dispatcher's socket to the zygote
        self.zygote_pid = None
        self.zygote_subreaper = False  # the zygote's: orphans of its own children (the fallback)
        self.deferred = []  # (pid, status, strays) exit reports of the zygote, handled by the loop
        self.spawning = []  # (slot, tmpdir) of standby children asked of the zygote, not yet received
        self.by_pid = {}  # execution pid -> job, for the zygote's exit reports
        self.trash = []  # temp dirs left to delete, a bounded number of entries per loop turn
        self.tmp_bytes = int(cfg.get("tmp_size_mb", 256)) << 20
        self.confinement = None
        self.namespaces = False
        self.cgroup = cfg.get("memory_cgroup")  # per-slot memory cgroups (v1), or None

    # ---------------------------------------------------------------- setup
    def preimport(self):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("MKL_NUM_THREADS", "1")
        os.environ.setdefault("MPLBACKEND", "Agg")
        loaded = []
        for mod in self.cfg.get("preimport", []):
            try:
                importlib.import_module(mod)
                loaded.append(mod)
            except Exception:
                pass
        warm = self.cfg.get("warmup")
        if warm:
            # Lazy imports and one-time initialisation (sympy's solvers and simplification, numpy's
            # linalg) happen here once instead of in every child, and sympy's caches keep common
            # symbols and small expressions. It is our text, never a user's: children share only
            # immutable library objects, each in its own copy-on-write copy.
            import contextlib
            import io

            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(warm, "<warmup>", "exec"), {"__name__": "__warmup__"})
            except Exception as e:
                _log(f"warm-up failed (continuing cold): {e!r}")
        # The environment children get, set once here (per child only HOME and TMPDIR change).
        os.environ.clear()
        os.environ.update(CHILD_ENV)
        for stream in (sys.stdout, sys.stderr):  # what children print with (the server uses os.write)
            stream.flush()
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
        compile("pass", "<warm>", "exec")  # the first compile() initialises the parser: 2 ms a child
        gc.collect()
        gc.freeze()  # keep the imported heap out of the collector: fewer copy-on-write faults per fork
        if self.cfg.get("plain_fork", True):
            self.fork = _plain_fork() or os.fork
        self.huge_bytes = _collapse_heap_to_huge_pages() if self.cfg.get("huge_pages", True) else 0
        self.base_vm = _vm_size_bytes()
        return loaded

    # ---------------------------------------------------------------- child
    def _prepare(self, slot, out_w, err_w, tmpdir, ctl):
        """Everything a child does to itself that no request decides, done by the standby child
        before any request exists: its session, descriptors, the slot's uid and rlimits, its
        namespaces, private tmpfs and Landlock domain (~0.4 ms that is no longer part of a call).
        Only `ctl`, the socket the request will arrive on, stays open besides stdin/stdout/stderr."""
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        ctl_fd = ctl.fileno()
        os.closerange(3, ctl_fd)  # SIGPIPE and SIGTERM are at their defaults since main()
        os.closerange(ctl_fd + 1, 65536)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size, self.file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.chdir(tmpdir)
        if self.cgroup:
            # All processes of this execution together (the rlimit is per process); the dispatcher
            # sets the slot's limit from the request before handing it over.
            fd = os.open(f"{self.cgroup}/slot{slot}/cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        if self.can_setuid:
            uid = self.uid_base + slot
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        else:
            # Without a uid of its own the count includes the server's other processes.
            uid = os.getuid()
            n = len(_procs_of_uid(uid))
            resource.setrlimit(resource.RLIMIT_NPROC, (n + self.nproc, n + self.nproc))
        mnt_ns = None
        if self.confinement is not None:
            mnt_ns = self.confinement.enter(uid, tmpdir, self.namespaces)
        if mnt_ns is not None:
            # Kept alive by the dispatcher until the result is out: the last process of a mount
            # namespace tears it down (unmounts, a grace period, the tmpfs freed) before its exit
            # is reported, ~0.2 ms idle and 2 ms on a busy machine, measured here. A descriptor in
            # flight on the control socket, never received, holds it; the dispatcher closes it.
            socket.send_fds(ctl, [b"N"], [mnt_ns])
            os.close(mnt_ns)
        os.environ["HOME"] = os.environ["TMPDIR"] = tmpdir  # the rest was cleared in the server
        # tempfile cached the server's /tmp (shared, not writable by this uid): point it here.
        tempfile.tempdir = tmpdir
        # sys.stdin/stdout/stderr are the server's own objects, configured before forking; their
        # descriptors now point at /dev/null and this execution's pipes. New wrappers would cost
        # ~50 copy-on-write faults (~0.5 ms) per execution.

    def _run(self, req):
        """The request's own limits (lowering only: no capability is left to raise one), then its
        code; ends in os._exit."""
        try:
            timeout = float(req.get("timeout", 10.0))
            mem = int(req.get("memory_mb", 0)) << 20 or self.default_mem
            resource.setrlimit(resource.RLIMIT_CPU, (int(timeout) + 1, int(timeout) + 2))
            if self.base_vm:
                resource.setrlimit(resource.RLIMIT_AS, (self.base_vm + mem, self.base_vm + mem))
        except BaseException:
            os._exit(120)
        code = 0
        try:
            setup = req.get("setup")
            _reseed_random(self.fork is not os.fork, req["code"] + (setup or ""))
            if setup:
                # Replay of earlier blocks (stateful mode): their output was already shown, so hide it.
                g = {"__name__": "__main__"}
                real = sys.stdout
                sys.stdout = open(os.devnull, "w")
                try:
                    exec(compile(setup, "<setup>", "exec"), g)
                except BaseException:
                    pass
                finally:
                    sys.stdout = real
            else:
                g = {"__name__": "__main__"}
            exec(compile(req["code"], "<code>", "exec"), g)
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code & 0xFF
            else:
                try:
                    sys.stderr.write(str(e.code) + "\n")
                except Exception:
                    pass
                code = 1
        except BaseException as e:
            tb = e.__traceback__
            tb = tb.tb_next if tb is not None else tb  # hide this file's frame
            try:
                sys.stderr.write("".join(traceback.format_exception(type(e), e, tb)))
            except Exception:
                pass
            code = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)

    # ---------------------------------------------------------------- parent
    def _fork_child(self, body, fork):
        """Fork (with `fork`) a child with its own stdout/stderr pipes that runs `body(out_w, err_w)`
        (which ends in os._exit); returns (pid, stdout read end, stderr read end)."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = fork()
        except OSError:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        if pid == 0:
            _name_process(b"zerotir-exec")
            body(out_w, err_w)
            os._exit(120)
        os.close(out_w)
        os.close(err_w)
        return pid, out_r, err_r

    def _standby(self, ctl, out_w, err_w, slot, tmpdir, zygote_pid):
        """A pre-forked child for `slot`: confined as an execution of that slot is (`_prepare`: it
        then holds none of the server's descriptors), it waits for one request and runs it. Setup
        that fails is reported by the request it was meant for (exit 120), not by a retry loop.
        It dies with its parent: a child of the dispatcher (a sibling fork) through the parent-death
        signal (without a pid namespace nothing else would end it), a child of the zygote (the
        fallback) killed by the zygote; both also exit when they find their parent changed."""
        ppid = os.getppid()
        if ppid not in (self.pid, zygote_pid):  # the dispatcher died while we were being forked
            os._exit(0)
        try:
            self._prepare(slot, out_w, err_w, tmpdir, ctl)
            ready = True
        except BaseException:
            ready = False
        try:
            libc = _libc()
            if ppid == self.pid and libc is not None:
                # Set last: a change of credentials (the uid switch) clears it. Then the parent is
                # checked once more: it may have died before the signal was armed.
                libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
                if os.getppid() != ppid:
                    os._exit(0)
            buf = b""
            need = None
            while need is None or len(buf) < need:
                if not select.select([ctl], [], [], 1.0)[0]:
                    if os.getppid() != ppid:  # the server is gone
                        os._exit(0)
                    continue
                chunk = ctl.recv(1 << 16)
                if not chunk:
                    os._exit(0)
                buf += chunk
                if need is None and b"\n" in buf:
                    need = buf.index(b"\n") + 1 + int(buf[: buf.index(b" ")])
            ctl.close()
            req = _unpack_request(buf)
        except BaseException:
            os._exit(121)
        if not ready:
            os._exit(120)
        self._run(req)

    def _dispatch(self, req):
        """Hand the request to a ready standby child. Returns (pid, control socket, stdout fd, stderr
        fd, slot, tmpdir, sibling), or None when no standby child is ready (the request waits: the
        loop never blocks on the zygote); OSError where the slot's memory cgroup refuses the
        request's limit."""
        data = _pack_request(req)
        while self.standby:
            sb = self.standby[0]
            if self.cgroup:
                mem = int(req.get("memory_mb", 0)) << 20 or self.default_mem
                fd = os.open(f"{self.cgroup}/slot{sb[4]}/memory.limit_in_bytes", os.O_WRONLY)
                try:
                    os.write(fd, str(mem).encode())
                finally:
                    os.close(fd)
            self.standby.pop(0)
            try:
                sb[1].sendall(data)
                return sb
            except OSError:  # the standby child died
                self.drop_standby(sb, dead=True)
        return None

    # ---------------------------------------------------------------- zygote
    def spawn_standby(self):
        """Ask the zygote for one more standby child, bound to a free slot and its fresh temp dir (it
        arrives as a message, see on_zygote). The zygote learns the slot and the directory, never a
        request. False when no slot is free."""
        if not self.free_slots:
            return False
        slot = self.free_slots.pop()
        tmpdir = self.make_tmpdir(slot)
        if self.can_setuid:
            os.chown(tmpdir, self.uid_base + slot, self.uid_base + slot)
        self.zygote.send(b"S %d %s" % (slot, tmpdir.encode()))
        self.spawning.append((slot, tmpdir))
        return True

    def drop_standby(self, sb, dead=False):
        """Forget a standby child that died or is no longer wanted: its descriptors, its slot; a dead
        child of ours (`dead`, a sibling fork) is killed and reaped."""
        pid, ctl, out_r, err_r, slot, tmpdir, sibling = sb
        ctl.close()
        os.close(out_r)
        os.close(err_r)
        if dead and sibling:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.release_tmpdir(tmpdir)
        self.free_slots.append(slot)

    def on_zygote(self, block=False, defer_exits=False):
        """One message from the zygote: a new standby child with its descriptors, or the exit status
        of a child the zygote forked as its own (the fallback without sibling forks). Returns False
        when the zygote is gone."""
        self.zygote.setblocking(block)
        try:
            msg, fds, _, _ = socket.recv_fds(self.zygote, 64, 3)
        except BlockingIOError:
            return True
        finally:
            self.zygote.setblocking(True)
        if not msg:
            return False
        kind, pid, rest = msg.decode().split(" ", 2)
        pid = int(pid)
        if kind == "C":
            slot, tmpdir = self.spawning.pop(0)  # the zygote forks in the order asked
            ctl_fd, out_r, err_r = fds
            sibling = rest == "s"
            self.standby.append((pid, socket.socket(fileno=ctl_fd), out_r, err_r, slot, tmpdir, sibling))
        else:
            job = self.by_pid.get(pid)
            if job is not None:
                status, strays = rest.split(" ")
                if defer_exits:  # handled by the loop, not inside the caller's own exit handling
                    self.deferred.append((pid, int(status), strays != "0"))
                    return True
                del self.by_pid[pid]
                self.on_exit(job, int(status), strays != "0")
            else:  # a standby child that died before use
                for i, sb in enumerate(self.standby):
                    if sb[0] == pid:
                        del self.standby[i]
                        self.drop_standby(sb)
                        break
        return True

    def zygote_serve(self, sock):
        """The zygote's loop: fork standby children on request. It never reads a request or an
        output, so no child can find one in its memory. Its children are siblings (clone with
        CLONE_PARENT: children of the dispatcher, which waits on them itself); where such a clone
        fails, a plain child of the zygote, whose exit status (and whether it left strays) the
        zygote reports."""
        sibling_fork = _sibling_fork() if self.cfg.get("sibling_fork", True) else None
        zygote_pid = os.getpid()
        poller = select.epoll()
        poller.register(sock.fileno(), select.EPOLLIN)
        live = {}  # pidfd -> pid, of the zygote's own children (the fallback)
        self.live = set()
        while True:
            for fd, _ in poller.poll():
                if fd == sock.fileno():
                    try:
                        msg = sock.recv(4096)
                    except OSError:
                        msg = b""
                    if not msg:
                        for pid in list(self.live) + _own_children():
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except OSError:
                                pass
                        return
                    # one message b"S <slot> <tmpdir>" per standby child wanted
                    _, slot, tmpdir = msg.decode().split(" ", 2)
                    ctl, ctl_child = socket.socketpair()

                    def body(out_w, err_w, ctl=ctl, ctl_child=ctl_child, slot=int(slot), tmpdir=tmpdir):
                        ctl.close()
                        sock.close()
                        self._standby(ctl_child, out_w, err_w, slot, tmpdir, zygote_pid)

                    pid = None
                    if sibling_fork is not None:
                        try:
                            pid, out_r, err_r = self._fork_child(body, sibling_fork)
                        except OSError as e:
                            _log(f"clone(CLONE_PARENT) failed, plain forks from now on: {e!r}")
                            sibling_fork = None
                    if pid is None:
                        pid, out_r, err_r = self._fork_child(body, self.fork)
                    ctl_child.close()
                    kind = b"s" if sibling_fork is not None else b"z"
                    socket.send_fds(sock, [b"C %d %s" % (pid, kind)], [ctl.fileno(), out_r, err_r])
                    ctl.close()
                    os.close(out_r)
                    os.close(err_r)
                    if sibling_fork is None:
                        pidfd = os.pidfd_open(pid)
                        poller.register(pidfd, select.EPOLLIN)
                        live[pidfd] = pid
                        self.live.add(pid)
                else:
                    pid = live.pop(fd)
                    poller.unregister(fd)
                    os.close(fd)
                    self.live.discard(pid)
                    try:
                        _, status = os.waitpid(pid, 0)
                    except ChildProcessError:
                        status = 0
                    # Orphans would keep the pipes open and the uid's count up. Every process an
                    # execution leaves behind is re-parented to this subreaper before its exit is
                    # reported, so with none found here the dispatcher skips its uid sweep.
                    strays = self.kill_strays(lambda unknown: self.live) or not self.zygote_subreaper
                    sock.send(b"X %d %d %d" % (pid, status, strays))

    def close_standby(self):
        """Standby children exit on the end of their control socket (or when they find their parent
        gone)."""
        for sb in self.standby:
            self.drop_standby(sb)
        self.standby = []

    def probe_confinement(self):
        """Which parts of `_Confinement` this kernel and sandbox allow, tried once in a throw-away
        child with the first slot's uid; the children then do only what works."""
        bwrap = self.cfg.get("isolation") == "bwrap"
        readonly = _writable_mounts() if bwrap else ()
        devpts = bwrap and os.path.ismount("/dev/pts")
        conf = _Confinement(self.tmp_bytes, bool(self.cfg.get("seccomp", True)), readonly, devpts)
        if not conf.ok:
            return
        self.confinement = conf
        tmpdir = self.make_tmpdir(0)
        if self.can_setuid:
            os.chown(tmpdir, self.uid_base, self.uid_base)
        filt = conf.seccomp
        tries = [(ns, f) for ns in (True, False) for f in ((filt, None) if filt is not None else (None,))]
        for namespaces, conf.seccomp in tries:
            pid = os.fork()
            if pid == 0:
                try:
                    if self.can_setuid:
                        os.setgroups([])
                        os.setgid(self.uid_base)
                        os.setuid(self.uid_base)
                    conf.enter(os.getuid(), tmpdir, namespaces)
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            if os.waitpid(pid, 0)[1] == 0:
                self.namespaces = namespaces
                break
        else:
            self.confinement = None
        os.rmdir(tmpdir)

    def watch_fd(self, fd, kind, job):
        self.poller.register(fd, select.EPOLLIN)
        self.watch[fd] = (kind, job)

    def unwatch_fd(self, fd):
        self.poller.unregister(fd)
        del self.watch[fd]

    def make_tmpdir(self, slot):
        """A fresh private directory per execution (os.mkdir with a counter: tempfile.mkdtemp's
        random names cost more memory touches than they buy here, where only we create names)."""
        while True:
            self.tmp_seq += 1
            path = f"{self.tmp_root}/run{slot}_{self.tmp_seq}"
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue

    def reject(self, rid, why):
        self.emit(
            {
                "id": rid,
                "status": "error",
                "stdout": "",
                "stderr": f"bad request: {why}",
                "exit_code": -1,
                "seconds": 0.0,
                "truncated": False,
            }
        )

    def start_job(self, req):
        try:
            timeout = _checked_timeout(req.get("timeout"))
        except (TypeError, ValueError) as e:
            self.reject(req["id"], e)
            return
        req["timeout"] = timeout
        try:
            sb = self._dispatch(req)
        except OSError as e:  # the slot's memory cgroup refused the limit (the standby stays)
            self.reject(req["id"], f"memory limit: {e}")
            return
        if sb is None:  # no standby child left (all had died): the request waits for the next
            self.pending.insert(0, req)
            return
        pid, ctl, out_r, err_r, slot, tmpdir, sibling = sb
        job = Job()
        job.rid, job.slot, job.pid, job.tmpdir, job.ctl = req["id"], slot, pid, tmpdir, ctl
        job.start = time.monotonic()
        job.deadline = job.start + timeout
        job.timed_out = False
        job.exit_status = None
        job.finish_by = None
        job.cap = int(req.get("max_output_bytes", 1 << 16))
        job.fds = {out_r: "stdout", err_r: "stderr"}
        job.bufs = {"stdout": bytearray(), "stderr": bytearray()}
        job.nbytes = {"stdout": 0, "stderr": 0}
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            self.watch_fd(fd, "pipe", job)
        job.pidfd = None
        if sibling:  # our own child: we wait on it (else the zygote reports its exit)
            job.pidfd = os.pidfd_open(pid)
            self.watch_fd(job.pidfd, "exit", job)
        self.by_pid[pid] = job
        self.jobs[job.rid] = job

    def kill_tree(self, job, sweep=True, group=True):
        """Kill an execution's process group (with `group`: not once its process is reaped, when the
        group id may name another group) and, with `sweep`, every process of its slot's uid (a
        /proc scan, the costliest step of a call's teardown at high concurrency: skipped for an
        execution that exited with no orphan left, see on_pidfd)."""
        if group:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.can_setuid and sweep:
            for _ in range(3):
                pids = _procs_of_uid(self.uid_base + job.slot)
                if not pids:
                    break
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass

    def known_children(self, unknown=()):
        """The dispatcher's children that are no strays: the zygote, running executions, standby
        children, and of the `unknown` others those that are standby children forked but not yet
        announced (the zygote's message on its way). As root these are told apart by uid: a new
        child runs as the server's uid until its setuid to a slot being spawned, while a stray runs
        as the uid of the slot whose execution left it (whose slot is not free before this check).
        Without root (one uid for all), the zygote's announcements are awaited instead."""
        known = {self.zygote_pid}
        known.update(j.pid for j in self.jobs.values() if j.exit_status is None)
        known.update(sb[0] for sb in self.standby)
        unknown = [p for p in unknown if p not in known]
        if unknown and self.spawning:
            if self.can_setuid:
                fresh = {self.uid_base + slot for slot, _ in self.spawning}
                fresh.add(os.geteuid())
                known.update(p for p in unknown if _uid_of(p) in fresh)
            else:
                while self.spawning:
                    if not self.on_zygote(block=True, defer_exits=True):
                        break
                return self.known_children()
        return known

    def kill_strays(self, known):
        """Kill and reap our children that `known(unknown)` does not name (given the children not
        named by `known()`, it may name some of them too): orphans of finished or killed
        executions (their own children re-parent to us in turn, hence the loop). True if there
        were any."""
        found = False
        names = known(())
        for _ in range(100):
            strays = [p for p in _own_children() if p not in names]
            if strays:
                names = known(strays)
                strays = [p for p in strays if p not in names]
            if not strays:
                break
            found = True
            for p in strays:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            for p in strays:
                try:
                    os.waitpid(p, 0)
                except ChildProcessError:
                    pass
        return found

    def on_pipe(self, fd, job):
        name = job.fds[fd]
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.unwatch_fd(fd)
            os.close(fd)
            del job.fds[fd]
            self.maybe_finish(job)
            return
        buf = job.bufs[name]
        buf += data
        job.nbytes[name] += len(data)
        if len(buf) > 2 * job.cap:
            del buf[: len(buf) - job.cap]  # keep the tail: results and tracebacks come last

    def on_pidfd(self, job):
        """An execution that is our own child (a sibling fork) exited: its process group is killed
        while its zombie still holds the group id, then it is reaped and our strays are killed."""
        self.unwatch_fd(job.pidfd)
        os.close(job.pidfd)
        job.pidfd = None
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            _, status = os.waitpid(job.pid, 0)
        except ChildProcessError:
            status = 0
        self.by_pid.pop(job.pid, None)
        # Orphans would keep the pipes open and the uid's count up. Every process an execution
        # leaves behind is re-parented to us (the subreaper), so with none found the uid sweep is
        # skipped.
        strays = self.kill_strays(self.known_children) or not self.subreaper
        self.on_exit(job, status, strays, group=False)

    def on_exit(self, job, status, strays=True, group=True):
        job.exit_status = status
        self.kill_tree(job, strays, group)  # orphans would keep the pipes open and the uid's process count up
        job.finish_by = time.monotonic() + 0.5
        self.maybe_finish(job)

    def maybe_finish(self, job, force=False):
        if job.exit_status is None or (job.fds and not force):
            return
        for fd in list(job.fds):
            self.unwatch_fd(fd)
            os.close(fd)
        job.fds = {}
        status = job.exit_status
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            exit_code = -sig
            verdict = (
                "timeout"
                if job.timed_out
                else ("killed" if sig in (signal.SIGKILL, signal.SIGXCPU) else "error")
            )
        else:
            exit_code = os.WEXITSTATUS(status)
            verdict = "timeout" if job.timed_out else ("ok" if exit_code == 0 else "error")
        if exit_code == 120 and not job.timed_out:
            verdict = "error"
        truncated = any(job.nbytes[k] > job.cap for k in job.nbytes)
        out = {}
        for k in ("stdout", "stderr"):
            b = bytes(job.bufs[k][-job.cap :])
            text = b.decode("utf-8", errors="replace")
            if job.nbytes[k] > job.cap:
                text = f"[... {job.nbytes[k] - job.cap} bytes truncated ...]\n" + text
            out[k] = text
        if truncated and verdict == "ok":
            verdict = "truncated"
        self.emit(
            {
                "id": job.rid,
                "status": verdict,
                "stdout": out["stdout"],
                "stderr": out["stderr"],
                "exit_code": exit_code,
                "seconds": round(time.monotonic() - job.start, 6),
                "truncated": truncated,
            }
        )
        # The execution's mount namespace goes with its control socket, now that the result is out:
        # closed by the closer thread, since the last reference to a mount namespace tears it down
        # in the closing thread, a grace period included (0.2 ms p50, p90 2-3 ms and up to 13 ms
        # with 16 executions at once, measured here), which the loop would otherwise wait for.
        self.closer.put(job.ctl)
        self.release_tmpdir(job.tmpdir)
        self.by_pid.pop(job.pid, None)
        del self.jobs[job.rid]
        self.free_slots.append(job.slot)

    def release_tmpdir(self, path):
        try:
            os.rmdir(path)  # an unused mount point, or a dir the execution wrote nothing into
        except OSError:
            self.trash.append(path)  # no tmpfs of its own: deleted a bounded part per loop turn

    def emit(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        view = memoryview(data)
        while view:
            try:
                n = os.write(1, view)
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)

    def on_control(self):
        try:
            data = os.read(0, 1 << 16)  # a pipe holds 64 KiB: a larger buffer only costs an mremap
        except BlockingIOError:
            return True
        if not data:
            return False
        for line in _split_lines(self.inbuf, data):
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if "code" not in req or "id" not in req:
                    raise ValueError("request needs id and code")
            except Exception as e:
                self.reject(None, e)
                continue
            self.pending.append(req)
        return True

    def close_loop(self):
        """The closer thread (the dispatcher's only other thread: it never forks)."""
        while True:
            self.closer.get().close()

    def serve(self):
        self.closer = queue.SimpleQueue()
        threading.Thread(target=self.close_loop, daemon=True).start()
        os.set_blocking(0, False)
        self.watch_fd(0, "control", None)
        self.watch_fd(self.zygote.fileno(), "zygote", None)
        alive = True
        while alive or self.jobs or self.pending:
            while self.deferred:  # exit reports received while waiting for a standby child
                pid, status, strays = self.deferred.pop(0)
                job = self.by_pid.pop(pid, None)
                if job is not None:
                    self.on_exit(job, status, strays)
            # A slot is taken by a job or by a standby child (prepared for it, see _standby). A
            # request waits for a ready standby child in this loop, never blocking it.
            while self.pending and len(self.jobs) < self.slots and self.standby:
                self.start_job(self.pending.pop(0))
            # Standby children, forked by the zygote meanwhile: `standby` ready for the next
            # requests (at saturation too: when a slot frees, one is there), plus one for each
            # request that could start now.
            want = self.standby_target + min(len(self.pending), self.slots - len(self.jobs))
            while len(self.standby) + len(self.spawning) < want and self.spawn_standby():
                pass
            if self.trash:
                budget = 2000
                while self.trash and budget > 0:
                    budget = _remove_tree(self.trash[-1], budget)
                    if budget > 0:
                        self.trash.pop()
            now = time.monotonic()
            timeout = None
            for job in list(self.jobs.values()):
                if job.exit_status is None and not job.timed_out:
                    if now >= job.deadline:
                        job.timed_out = True
                        self.kill_tree(job)
                    else:
                        timeout = min(timeout if timeout is not None else 1e9, job.deadline - now)
                elif job.exit_status is not None and job.finish_by is not None:
                    if now >= job.finish_by:
                        self.maybe_finish(job, force=True)
                        continue
                    timeout = min(timeout if timeout is not None else 1e9, job.finish_by - now)
                elif job.timed_out:
                    timeout = min(timeout if timeout is not None else 1e9, 0.05)
            if not alive and not self.jobs and not self.pending:
                break
            if self.trash:
                timeout = 0
            try:
                events = self.poller.poll(-1 if timeout is None else timeout)
            except InterruptedError:
                continue
            for fd, _ in events:
                entry = self.watch.get(fd)
                if entry is None:  # unregistered by an earlier event of this batch
                    continue
                kind, job = entry
                if kind == "control":
                    if not self.on_control():
                        alive = False
                        self.unwatch_fd(0)
                elif kind == "pipe":
                    if fd in job.fds:
                        self.on_pipe(fd, job)
                elif kind == "exit":
                    self.on_pidfd(job)
                elif not self.on_zygote():
                    _log("the zygote is gone")
                    for job in self.jobs.values():
                        self.kill_tree(job)
                    os._exit(1)


def main():
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    # Children inherit these: a broken pipe or a kill ends them quietly, as in a normal process.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Not dumpable: no process of the same uid may ptrace this one or open its /proc memory,
    # environment or descriptors (children inherit it).
    libc = _libc()
    if libc is not None:
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    server = ForkServer(cfg)
    loaded = server.preimport()
    server.probe_confinement()
    # Without root, executions share a uid: what keeps them apart is Landlock's scopes and each one's
    # own namespaces (private tmpfs, the sandbox's other mounts read-only, its own devpts). Where a
    # step of those fails the probe falls back to no namespaces, which must not pass silently.
    conf = server.confinement
    isolated = server.can_setuid or (conf is not None and conf.landlock >= 6 and server.namespaces)
    info = {
        "ready": True,
        "pid": os.getpid(),
        "uid": os.geteuid(),
        "setuid": server.can_setuid,
        "landlock_abi": server.confinement.landlock if server.confinement else 0,
        "exec_namespaces": server.namespaces,
        "seccomp": bool(server.confinement and server.confinement.seccomp),
        "memory_cgroup": bool(server.cgroup),
        "preimported": loaded,
        "base_vm_mb": server.base_vm >> 20,
        "huge_page_mb": server.huge_bytes >> 20,
        "plain_fork": server.fork is not os.fork,
    }
    if not isolated and cfg.get("isolation", "none") != "none":
        info["ready"] = False
        info["error"] = (
            "executions would not be isolated from each other: no per-slot uids (not root) and no "
            "Landlock signal/abstract-socket scoping (Linux 6.12+) or no user and mount namespace of "
            "their own (unshare, the private tmpfs, devpts or a read-only remount failed). Run as root "
            "(the pool drops each execution to its own uid), use a kernel with Landlock ABI 6 and user "
            "namespaces, or set sandbox.isolation=none"
        )
        server.emit(info)
        sys.exit(2)
    # Split in two: the child is the zygote, a warm image that never reads a request or an output,
    # and forks every execution; this process, the dispatcher, serves the pipes and is the parent
    # of every execution (the zygote forks them as its siblings, see _sibling_fork). An execution
    # forked from the dispatcher could read everything the server holds (concurrent outputs,
    # queued code, freed text) in its own copy of the server's memory.
    zsock, dsock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = server.fork()
    if pid == 0:
        dsock.close()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        server.zygote_subreaper = _set_child_subreaper()
        server.zygote_serve(zsock)
        os._exit(0)
    zsock.close()
    server.zygote = dsock
    server.zygote_pid = pid
    server.emit(info)
    try:
        server.serve()
    finally:
        server.close_standby()
    os._exit(0)


if __name__ == "__main__":
    main()
