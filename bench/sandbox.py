"""Sandbox throughput and latency, all measured in one run, interleaved round by round:

* the warm fork-server pool (this checkout) vs `subprocess.run([python, "-c", code])`;
* vs a reference checkout of zerotir (`--ref PATH` or `--ref COMMIT`: its pool runs in a subprocess
  that imports it through PYTHONPATH), the "same run against an earlier version" comparison;
* at concurrency 1, vs the floor of a process per execution: a bare forked child of a warm
  interpreter (same imports and warm-up, no sandbox) runs the snippet once and exits. Two such
  floors: `fork_floor`, whose parent ran the snippet 7 times first (to time its compute), so each
  child finds the libraries' caches primed for this very snippet (sympy's hold its expressions and
  results); and `fork_floor_first`, whose parent never ran it, so that each child's run is the
  snippet's first in that interpreter, as an execution forked by the fork server is.

Rounds rotate the order of the arms so that a noisy neighbour hits them alike; ratios are medians of
per-round ratios. Every cell, the floors, ratios, memory and machine details go to
bench/results/sandbox.json.

The pool is built through `zerotir.build` from the config's `sandbox` section (1 worker, 16 slots;
trailing `sandbox.*=value` overrides change it); the reference checkout's pool gets the same fields
where its `PoolConfig` has them. The baselines are deliberately built by hand, since they are what
the pool is measured against: a fresh `python -c` per execution, and the bare forked child.

    python bench/sandbox.py [--quick | --smoke] [--ref 63a78d1] [--no-subprocess] [sandbox.key=value ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import add_config_args, bench_config, write_result  # noqa: E402

from zerotir.sandbox.pool import ExecutorPool, PoolConfig  # noqa: E402

SNIPPETS = {
    "print": "print(1+1)",
    "sympy": "import sympy as sp\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 5*x + 6, x), sp.simplify(sp.sin(x)**2 + sp.cos(x)**2))",
    "numpy": "import numpy as np\na = np.arange(10000).reshape(100, 100)\nprint(int((a @ a.T).trace()))",
}
POOL = {"workers": 1, "slots_per_worker": 16}
REPO = Path(__file__).resolve().parents[1]

FLOOR_SCRIPT = r"""
import contextlib, io, json, os, sys, time
from zerotir.sandbox._forkserver import ForkServer
cfg = json.loads(sys.argv[1])
ForkServer(cfg).preimport()  # the fork server's own imports, warm-up and settings
real_stdout = sys.stdout
with contextlib.redirect_stdout(io.StringIO()):
    code = compile(cfg["code"], "<code>", "exec")
    times = []
    for _ in range(cfg.get("prerun", 7)):
        t = time.perf_counter()
        exec(code, {"__name__": "__main__"})
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times}), file=real_stdout, flush=True)
    for line in sys.stdin:  # {"forks": k}: k bare forked children, one after the other
        forked = []  # (wall s of fork + run + exit seen by the parent, s of the run inside the child)
        for _ in range(json.loads(line)["forks"]):
            r, w = os.pipe()
            t = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                t1 = time.perf_counter()
                exec(code, {"__name__": "__main__"})
                os.write(w, str(time.perf_counter() - t1).encode())
                os._exit(0)
            os.close(w)
            inner = float(os.read(r, 64))
            os.waitpid(pid, 0)
            forked.append((time.perf_counter() - t, inner))
            os.close(r)
        print(json.dumps(forked), file=real_stdout, flush=True)
"""



def _floor_stats(rounds: list[list[tuple[float, float]]]) -> dict:
    """Medians (ms) over every round's (fork+run+exit, run) seconds of a bare-fork floor."""
    forked = [f for r in rounds for f in r]
    return {
        "wall_ms": 1000 * statistics.median(w for w, _ in forked),
        "run_ms": 1000 * statistics.median(i for _, i in forked),
        "n": len(forked),
    }

def measure(run_one, n: int, conc: int) -> dict:
    """n calls from `conc` threads: throughput per s, latencies and in-server seconds, all ok."""
    lat: list[float] = []
    child: list[float] = []

    def task(_):
        t = time.perf_counter()
        ok, seconds = run_one()
        lat.append(time.perf_counter() - t)
        if seconds is not None:
            child.append(seconds)
        return ok

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(conc) as ex:
        outs = list(ex.map(task, range(n)))
    return {"tp": n / (time.perf_counter() - t0), "lat": lat, "child": child, "ok": all(outs)}


def serve_pool() -> None:
    """`--serve-pool`: the pool of whichever zerotir is first on sys.path (PYTHONPATH), driven by
    JSON lines {"code", "n", "conc"} on stdin, each answered with `measure`'s result."""
    import dataclasses

    wanted = json.loads(os.environ.get("ZEROTIR_BENCH_POOL", json.dumps(POOL)))
    known = {f.name for f in dataclasses.fields(PoolConfig)}  # a reference checkout may lack new fields
    pool = ExecutorPool(PoolConfig(**{k: v for k, v in wanted.items() if k in known}))
    info = {"ready": True, "isolation": pool.isolation, "info": pool.servers[0].info}
    info["pids"] = {k: [s.proc.pid for s in getattr(pool, k)] for k in ("servers", "light", "numpy")}
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)

        def one(c=cmd["code"]):
            r = pool.run(c, timeout_s=60)
            return r.status == "ok", r.seconds

        print(json.dumps(measure(one, cmd["n"], cmd["conc"])), flush=True)
    pool.close()


class Driver:
    """A long-lived helper process answering one JSON line per command."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.hello = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.proc.args[:3]} exited (rc={self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd: dict):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def reference_tree(ref: str) -> tuple[Path, Path | None]:
    """A checkout to compare against: a directory, or a commit checked out into a temporary git
    worktree (returned second, to be removed)."""
    if Path(ref).is_dir():
        return Path(ref).resolve(), None
    tmp = Path(tempfile.mkdtemp(prefix="zerotir-ref-")) / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp), ref],
        check=True,
        capture_output=True,
    )
    return tmp, tmp


def summary(rounds: list[dict]) -> dict:
    lat = sorted(x for r in rounds for x in r["lat"])
    child = [x for r in rounds for x in r["child"]]
    tps = [r["tp"] for r in rounds]
    out = {
        "n": len(lat),
        "throughput_per_s": statistics.median(tps),
        "throughput_rounds": tps,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "p50_rounds_ms": [1000 * statistics.median(r["lat"]) for r in rounds],
        "outputs_ok": all(r["ok"] for r in rounds),
    }
    if child:
        out["child_ms_p50"] = 1000 * statistics.median(child)
    return out


def pss_kb(pid: int) -> int:
    """Proportional set size of a process and its descendants (shared pages split fairly)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for ln in open(f"/proc/{p}/smaps_rollup"):
                if ln.startswith("Pss:"):
                    total += int(ln.split()[1])
            for t in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (t / "children").read_text().split()]
        except OSError:
            continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--snippets", default=",".join(SNIPPETS), help="comma-separated subset of: " + ", ".join(SNIPPETS)
    )
    ap.add_argument("--result-name", default="sandbox", help="bench/results/NAME.json")
    ap.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrency levels")
    ap.add_argument("--ref", default=None, help="reference checkout (directory) or commit to compare against")
    ap.add_argument("--no-subprocess", action="store_true", help="skip the subprocess.run baseline")
    ap.add_argument(
        "--floor-forks", type=int, default=15, help="bare forked children per round at concurrency 1"
    )
    ap.add_argument("--serve-pool", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--smoke", action="store_true", help="print snippet, concurrency 1, one round: only checks that it runs"
    )
    add_config_args(ap)
    args = ap.parse_args()
    if args.serve_pool:
        serve_pool()
        return
    if args.smoke:
        args.snippets, args.concurrency, args.rounds, args.floor_forks = "print", "1", 1, 3
    import dataclasses

    from zerotir import build

    pool_cfg = build.pool_config(bench_config(None, ["sandbox.workers=1", "sandbox.slots=16"], args.overrides))
    POOL.clear()
    POOL.update(dataclasses.asdict(pool_cfg))
    os.environ["ZEROTIR_BENCH_POOL"] = json.dumps(POOL)  # both helper pools read it
    snippets = {k: SNIPPETS[k] for k in args.snippets.split(",")}
    levels = [int(c) for c in args.concurrency.split(",")]
    scale = 0.02 if args.smoke else 0.25 if args.quick else 1.0
    # Both pools run in helper processes alike (this checkout's and the reference's), driven the
    # same way; this process only routes (which fork server's imports a snippet gets, for the floor).
    router = ExecutorPool(PoolConfig(**POOL), eager=False)
    pool = Driver([sys.executable, __file__, "--serve-pool"], {**os.environ, "PYTHONPATH": str(REPO / "src")})
    ref_dir, ref_tmp = reference_tree(args.ref) if args.ref else (None, None)
    ref = None
    if ref_dir is not None:
        env = {**os.environ, "PYTHONPATH": str(ref_dir / "src")}
        ref = Driver([sys.executable, __file__, "--serve-pool"], env)
        ref_git = subprocess.run(
            ["git", "-C", str(ref_dir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
    for code in snippets.values():  # warm-up
        for d in (pool, ref) if ref else (pool,):
            d.ask({"code": code, "n": 3, "conc": 1})
    cells = []
    floors = {}
    for name, code in snippets.items():
        server = router.servers_for(code)[0]  # the imports and warm-up of the server this code runs in
        spec = {"preimport": list(server.preimport), "warmup": server.warmup, "code": code}
        floor = Driver([sys.executable, "-c", FLOOR_SCRIPT, json.dumps(spec)])
        first = Driver([sys.executable, "-c", FLOOR_SCRIPT, json.dumps({**spec, "prerun": 0})]) if 1 in levels else None
        times = floor.hello["times"]
        floors[name] = {"first_run_ms": 1000 * times[0], "repeat_run_ms": 1000 * statistics.median(times[1:])}
        for conc in levels:
            n_ours = max(conc, int((300 if name == "print" else 100) * scale))
            n_base = max(conc, int((40 if name == "print" else 12) * scale) if conc == 1 else conc)

            # At concurrency 1 the rounds are cut finer (a noisy neighbour changes within seconds).
            split = 4 if conc == 1 else 1
            n_ours, n_base = max(conc, n_ours // split), max(conc, n_base // split)

            def base_one(c=code):
                rc = subprocess.run([sys.executable, "-c", c], capture_output=True, timeout=120).returncode
                return rc == 0, None

            arms = {"zerotir": partial(pool.ask, {"code": code, "n": n_ours, "conc": conc})}
            if ref:
                arms["reference"] = partial(ref.ask, {"code": code, "n": n_ours, "conc": conc})
            if not args.no_subprocess:
                arms["subprocess"] = partial(measure, base_one, n_base, conc)
            if conc == 1:
                arms["fork_floor"] = partial(floor.ask, {"forks": max(3, args.floor_forks // split)})
                arms["fork_floor_first"] = partial(first.ask, {"forks": max(3, args.floor_forks // split)})
            got: dict[str, list] = {k: [] for k in arms}
            names = list(arms)
            for i in range(args.rounds * split):
                for k in names[i % len(names) :] + names[: i % len(names)]:
                    got[k].append(arms[k]())
            cell: dict = {"snippet": name, "concurrency": conc}
            for k in ("zerotir", "reference", "subprocess"):
                if k in got:
                    cell[k] = summary(got[k])
            z = cell["zerotir"]
            msg = f"{name:6s} c={conc:3d}  zerotir {z['throughput_per_s']:7.1f}/s p50 {z['p50_ms']:7.2f} ms p99 {z['p99_ms']:7.2f} ms"
            if "subprocess" in cell:
                ratios = [a["tp"] / b["tp"] for a, b in zip(got["zerotir"], got["subprocess"])]
                cell["speedup"], cell["speedup_rounds"] = statistics.median(ratios), ratios
                msg += f" | subprocess p50 {cell['subprocess']['p50_ms']:7.1f} ms x{cell['speedup']:.1f}"
            if "reference" in cell:
                p50 = [
                    statistics.median(a["lat"]) / statistics.median(b["lat"])
                    for a, b in zip(got["zerotir"], got["reference"])
                ]
                tp = [a["tp"] / b["tp"] for a, b in zip(got["zerotir"], got["reference"])]
                cell["vs_reference"] = {
                    "p50_ratio": statistics.median(p50),
                    "p50_ratio_rounds": p50,
                    "throughput_ratio": statistics.median(tp),
                    "throughput_ratio_rounds": tp,
                }
                r = cell["reference"]
                msg += (
                    f" | reference p50 {r['p50_ms']:7.2f} ms {r['throughput_per_s']:7.1f}/s: p50 x{cell['vs_reference']['p50_ratio']:.3f}"
                    f" throughput x{tp and statistics.median(tp):.3f}"
                )
            if "fork_floor" in got:
                fl = _floor_stats(got["fork_floor"])
                cell["fork_floor"] = fl
                floors[name].update(fork_wall_ms=fl["wall_ms"], fork_first_run_ms=fl["run_ms"])
                cell["p50_over_fork_floor"] = z["p50_ms"] / fl["wall_ms"]
                cell["p50_over_fork_run"] = z["p50_ms"] / fl["run_ms"]
                msg += (
                    f" | bare fork: fork+run+exit {fl['wall_ms']:.2f} ms (p50 x{cell['p50_over_fork_floor']:.2f}),"
                    f" run {fl['run_ms']:.2f} ms (x{cell['p50_over_fork_run']:.2f})"
                )
            if "fork_floor_first" in got:
                ff = _floor_stats(got["fork_floor_first"])
                cell["fork_floor_first"] = ff
                floors[name].update(fork_first_wall_ms=ff["wall_ms"], fork_first_snippet_run_ms=ff["run_ms"])
                cell["p50_over_fork_floor_first"] = z["p50_ms"] / ff["wall_ms"]
                msg += (
                    f" | first run in a bare fork: fork+run+exit {ff['wall_ms']:.2f} ms"
                    f" (p50 x{cell['p50_over_fork_floor_first']:.2f})"
                )
            cells.append(cell)
            print(msg, flush=True)
        floor.close()
        if first is not None:
            first.close()
    pids = pool.hello["pids"]
    heavy, light, numpy = pids["servers"], pids["light"], pids["numpy"]
    mem = {
        "forkserver_pss_mb_per_worker": round(sum(pss_kb(p) for p in heavy) / 1024 / max(1, len(heavy)), 1),
        "light_forkserver_pss_mb": round(sum(pss_kb(p) for p in light) / 1024, 1),
        "numpy_forkserver_pss_mb": round(sum(pss_kb(p) for p in numpy) / 1024, 1),
        "isolation": pool.hello["isolation"],
        "slots_per_worker": POOL["slots_per_worker"],
    }
    info = pool.hello["info"]
    pool.close()
    if ref:
        ref.close()
    if ref_tmp is not None:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(ref_tmp)], capture_output=True
        )
        shutil.rmtree(ref_tmp.parent, ignore_errors=True)
    path = write_result(
        args.result_name,
        {
            "cells": cells,
            "compute_floor_ms": floors,
            "memory": mem,
            "fork_server": {
                k: info.get(k) for k in ("setuid", "landlock_abi", "exec_namespaces", "seccomp", "plain_fork")
            },
            "reference": None if ref_dir is None else {"ref": args.ref, "git": ref_git.stdout.strip()},
            "targets": {
                "c1_p50_over_fork_floor": 1.25,
                "vs_reference_p50_ratio_max": 1.10,
                "print_c16_speedup": 3.5,
                "sympy_numpy_c16_speedup": 25,
            },
        },
    )
    print(
        f"memory (PSS): {mem['forkserver_pss_mb_per_worker']} MB per numpy/sympy worker, "
        f"{mem['light_forkserver_pss_mb']} MB light worker, {mem['numpy_forkserver_pss_mb']} MB numpy worker; "
        f"results: {path}"
    )


if __name__ == "__main__":
    main()
