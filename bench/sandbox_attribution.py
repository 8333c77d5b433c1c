"""Where the hardened sandbox's throughput goes: this checkout's pool against copies of itself with
parts of the per-execution confinement removed, and against the pre-hardening reference, each pair
measured in the same run (`bench/sandbox.py --ref`, interleaved rounds, ratios of medians).

Issue 15 asked for sandbox numbers within 10% of the pre-hardening pool *and* for per-execution
isolation (user, mount and IPC namespaces with a private tmpfs; a Landlock domain; no capabilities).
Those steps run in the pre-forked standby child, so at concurrency 1 they are off the call's path, but
at saturation every execution pays them in CPU. This bench says how much of the gap each part is:

* `no_exec_namespaces`: the fork server's confinement probe is told that per-execution namespaces do
  not work (as on a kernel without unprivileged user namespaces): no unshare, no uid map, no tmpfs
  mount, no namespace teardown at exit; Landlock, no-new-privs, capabilities dropped stay;
* `no_standby`: no child forked and confined ahead of a request (as `sandbox.standby=0`, which the
  reference pool would be given too): each execution is forked and confined on arrival;
* `no_confinement`: no `_Confinement` at all (the uid switch, rlimits, clean image stay);
* `ref`: the reference commit (default 63a78d1, the pool before the hardening issue).

Each variant is a copy of this checkout's `src/` with one exact string replaced (the bench stops if
the string is gone, so it cannot measure a variant that silently equals the current code). The
throughput ratio reported per cell is current / variant (< 1: the removed part costs that much).

    python bench/sandbox_attribution.py [--rounds 3] [--ref 63a78d1] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FORKSERVER = Path("src/zerotir/sandbox/_forkserver.py")

VARIANTS: dict[str, tuple[str, str]] = {
    # (exact text in _forkserver.py, its replacement)
    "no_exec_namespaces": (
        "for ns in (True, False) for f in",
        "for ns in (False,) for f in",
    ),
    "no_standby": (
        'self.standby_target = int(cfg.get("standby", 1))',
        "self.standby_target = 0",
    ),
    "no_confinement": (
        'readonly, devpts)\n        if not conf.ok:',
        'readonly, devpts)\n        if True:',
    ),
}


def variant_tree(root: Path, name: str) -> Path:
    """A copy of this checkout's src/ with the variant's one replacement applied."""
    old, new = VARIANTS[name]
    tree = root / name
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__"))
    path = tree / FORKSERVER
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(
            f"variant {name}: the text it replaces is not in {FORKSERVER} exactly once; update VARIANTS"
        )
    path.write_text(text.replace(old, new))
    return tree


def compare(ref: str, name: str, rounds: int, full: bool, out_dir: Path) -> dict:
    """bench/sandbox.py with this checkout against `ref` (a directory or commit); its cells."""
    cmd = [sys.executable, str(REPO / "bench" / "sandbox.py"), "--no-subprocess", "--rounds", str(rounds)]
    cmd += [
        "--snippets",
        "print,numpy,sympy",
        "--concurrency",
        "1,16,64",
        "--ref",
        ref,
        "--result-name",
        name,
    ]
    if not full:
        cmd.append("--quick")
    env = {**os.environ, "ZEROTIR_BENCH_RESULTS": str(out_dir)}
    subprocess.run(cmd, check=True, env=env)
    return json.loads((out_dir / f"{name}.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ref", default="63a78d1", help="the pre-hardening reference commit")
    ap.add_argument(
        "--full", action="store_true", help="full-size rounds (default: bench/sandbox.py --quick)"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zerotir-attr-"))
    try:
        arms = {name: str(variant_tree(tmp, name)) for name in VARIANTS}
        arms["ref"] = args.ref
        table: dict[str, dict] = {}
        raw: dict[str, dict] = {}
        for arm, ref in arms.items():
            print(f"== this checkout vs {arm} ({ref})", flush=True)
            res = compare(ref, f"attr_{arm}", args.rounds, args.full, tmp / "results")
            raw[arm] = {"reference": res["reference"], "machine": res["machine"]}
            for cell in res["cells"]:
                key = f"{cell['snippet']} c={cell['concurrency']}"
                vs = cell["vs_reference"]
                table.setdefault(key, {})[arm] = {
                    "throughput_ratio": round(vs["throughput_ratio"], 3),
                    "p50_ratio": round(vs["p50_ratio"], 3),
                    "current_per_s": round(cell["zerotir"]["throughput_per_s"], 1),
                    "variant_per_s": round(cell["reference"]["throughput_per_s"], 1),
                }
        print(f"\n{'cell':<14}" + "".join(f"{a:>22}" for a in arms) + "   (throughput ratio current/variant)")
        for key, row in table.items():
            print(f"{key:<14}" + "".join(f"{row[a]['throughput_ratio']:>22.3f}" for a in arms))
        path = write_result(
            "sandbox_attribution",
            {
                "variants": {k: {"replaces": v[0], "with": v[1]} for k, v in VARIANTS.items()},
                "ref": args.ref,
                "rounds": args.rounds,
                "quick": not args.full,
                "cells": table,
                "runs": raw,
            },
        )
        print(f"results: {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
