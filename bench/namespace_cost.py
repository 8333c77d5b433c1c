"""What each kernel step of an execution's confinement costs at saturation, outside the sandbox.

`bench/sandbox_attribution.py` finds that the per-execution namespaces cost 15–17% of a trivial
snippet's throughput in the fork server. This splits that cost by step, with nothing of ours in the
way: `workers` processes (more than the cores, so that waits overlap and only machine time counts)
each fork `n` children in a row, and each child does one variant before it exits:

* `fork`: nothing (the floor);
* `user`: its own user namespace, with the uid/gid maps the fork server writes;
* `user+ipc`: also an IPC namespace (SysV objects die with the execution);
* `user+mnt`: also a mount namespace (a copy of the parent's mount table);
* `user+mnt+tmpfs`: also a private tmpfs mounted on a directory (the per-execution quota);
* `all`: user, mount and IPC namespaces and the tmpfs: what the fork server's standby child does.

The workers are fresh interpreters that import nothing else, so the floor is the cheapest fork, and
the ratios show each step at its largest share; the added milliseconds per child are kernel work and
do not depend on that. Rounds interleave the variants, and each round's throughputs are divided by
that round's `fork`, so that the machine's load, which moves by a third between rounds here, cancels
out of the ratios.
`--extra-mounts K` measures how the mount namespace's cost grows with the table it copies. As root
the children switch to an unused uid first, as the fork server's do; otherwise they map their
own uid.

    python bench/namespace_cost.py [--workers 8] [--children 150] [--rounds 5] [--extra-mounts K] [--smoke]
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
TMPFS = 1 << 40  # not a clone flag: "mount a tmpfs" in a variant's flags
VARIANTS = {
    "fork": 0,
    "user": CLONE_NEWUSER,
    "user+ipc": CLONE_NEWUSER | CLONE_NEWIPC,
    "user+mnt": CLONE_NEWUSER | CLONE_NEWNS,
    "user+mnt+tmpfs": CLONE_NEWUSER | CLONE_NEWNS | TMPFS,
    "all": CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | TMPFS,
}
UID = 61999  # as root: an unprivileged uid no pool uses (pools allocate from 61000 up)


def _child(libc, flags: int, tmpdir: str, as_root: bool) -> None:
    """One variant, then exit: status 0, or 3 (unshare refused), 4 (mount refused), 5 (anything else)."""
    try:
        uid = UID if as_root else os.getuid()
        if as_root:
            os.setgid(UID)
            os.setuid(UID)
        if flags:
            libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as the fork server does before unshare
            if libc.unshare(flags & ~TMPFS) != 0:
                os._exit(3)
            for name, text in (
                ("uid_map", f"{uid} {uid} 1"),
                ("setgroups", "deny"),
                ("gid_map", f"{uid} {uid} 1"),
            ):
                fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
                os.write(fd, text.encode())
                os.close(fd)
        if flags & TMPFS:
            opts = f"size={1 << 20},mode=0700,uid={uid},gid={uid}".encode()
            if libc.mount(b"tmpfs", tmpdir.encode(), b"tmpfs", 2 | 4, opts) != 0:  # MS_NOSUID|MS_NODEV
                os._exit(4)
    except BaseException:
        os._exit(5)
    os._exit(0)


def _add_mounts(libc, k: int, tmpdir: str) -> None:
    """Give this worker a mount namespace of its own with `k` more bind mounts, which every child's
    new mount namespace then copies (needs root)."""
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None) != 0:
        raise OSError(ctypes.get_errno(), "a private mount namespace for --extra-mounts")  # MS_REC|MS_PRIVATE
    for i in range(k):
        path = os.path.join(tmpdir + "-mounts", str(i))
        os.makedirs(path, exist_ok=True)
        if libc.mount(b"/usr", path.encode(), None, 4096, None) != 0:  # MS_BIND
            raise OSError(ctypes.get_errno(), f"bind mount {path}")


def _worker(flags: int, n: int, tmpdir: str, as_root: bool, q, extra_mounts: int = 0) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    if extra_mounts:
        _add_mounts(libc, extra_mounts, tmpdir)
    t0 = time.perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            _child(libc, flags, tmpdir, as_root)
        _, status = os.waitpid(pid, 0)
        if status:
            q.put(f"child exited with status {os.waitstatus_to_exitcode(status)}")
            return
    q.put(time.perf_counter() - t0)


def _throughput(flags: int, workers: int, n: int, tmpdir: str, as_root: bool, extra_mounts: int) -> float:
    """Children per second with `workers` forking side by side."""
    ctx = mp.get_context("spawn")  # fresh interpreters: the parent's imports would make every fork dearer
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(flags, n, tmpdir, as_root, q, extra_mounts)) for _ in range(workers)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    got = [q.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    errors = [g for g in got if isinstance(g, str)]
    if errors:
        raise SystemExit(f"namespace_cost: {errors[0]} (unshare or mount refused here?)")
    return workers * n / wall


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import write_result  # here: spawned workers import this module, not zerotir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--children", type=int, default=150, help="children forked by each worker per round")
    ap.add_argument("--rounds", type=int, default=5)
    more = "as root: K more mounts in the table each mount namespace copies (namespace_cost_mounts<K>.json)"
    ap.add_argument("--extra-mounts", type=int, default=0, metavar="K", help=more)
    ap.add_argument("--smoke", action="store_true", help="2 workers, 5 children, 1 round: that it runs")
    args = ap.parse_args()
    if args.smoke:
        args.workers, args.children, args.rounds = 2, 5, 1
    as_root = os.geteuid() == 0
    if args.extra_mounts and not as_root:
        ap.error("--extra-mounts needs root")
    tmpdir = tempfile.mkdtemp(prefix="zerotir-nscost-")
    if as_root:
        os.chown(tmpdir, UID, UID)
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        per_s = {
            name: _throughput(f, args.workers, args.children, tmpdir, as_root, args.extra_mounts)
            for name, f in VARIANTS.items()
        }
        rounds.append(per_s)
        print(f"round {r}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in per_s.items()), flush=True)
    os.rmdir(tmpdir)
    if args.extra_mounts:  # the bind mounts lived in the workers' namespaces, gone with them
        shutil.rmtree(tmpdir + "-mounts")
    ratios = {k: statistics.median(rd[k] / rd["fork"] for rd in rounds) for k in VARIANTS}
    # Machine time per child above the plain fork's, from the median ratio and the median fork rate.
    fork_per_s = statistics.median(rd["fork"] for rd in rounds)
    extra_ms = {k: round((1 / ratios[k] - 1) / fork_per_s * 1e3, 3) for k in VARIANTS}
    out = {
        "as_root": as_root,
        "extra_mounts": args.extra_mounts,
        "mounts_in_table": len(Path("/proc/self/mountinfo").read_text().splitlines()) + args.extra_mounts,
        "workers": args.workers,
        "children_per_worker": args.children,
        "rounds": rounds,
        "throughput_ratio_to_fork": {k: round(v, 3) for k, v in ratios.items()},
        "extra_ms_per_child": extra_ms,
    }
    path = write_result("namespace_cost" + (f"_mounts{args.extra_mounts}" if args.extra_mounts else ""), out)
    for k in VARIANTS:
        print(f"{k:16s} {ratios[k]:.3f} of fork's throughput, +{extra_ms[k]:.3f} ms per child")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
