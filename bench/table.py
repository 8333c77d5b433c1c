"""Print the README's performance table from bench/results/*.json."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def main() -> None:
    rows = ["| benchmark | zerotir | baseline | ratio | target |", "|---|---|---|---|---|"]
    sb = load("sandbox")
    if sb:
        for c in sb["cells"]:
            z, b = c["zerotir"], c["subprocess"]
            target = ""
            if c["concurrency"] == 16:
                target = {"print": "≥ 3.5×", "sympy": "(replaced by the first-run floor row)"}.get(
                    c["snippet"], "≥ 25×"
                )
            elif c["concurrency"] == 1 and c["snippet"] == "print":
                target = "p50 < 5 ms"
            rows.append(
                f"| sandbox `{c['snippet']}` c={c['concurrency']} (exec/s; p50/p99 ms) | "
                f"{z['throughput_per_s']:.0f}/s; {z['p50_ms']:.1f}/{z['p99_ms']:.1f} | "
                f"`subprocess.run` {b['throughput_per_s']:.1f}/s; {b['p50_ms']:.0f}/{b['p99_ms']:.0f} | "
                f"{c['speedup']:.1f}× | {target} |"
            )
        ref = (sb.get("reference") or {}).get("git")
        for name in dict.fromkeys(c["snippet"] for c in sb["cells"]):
            mine = [c for c in sb["cells"] if c["snippet"] == name]
            vs = [c for c in mine if "vs_reference" in c]
            if ref and vs:
                rows.append(
                    f"| sandbox `{name}` vs the same run of {ref} (p50 ratio; throughput ratio) at "
                    f"c={'/'.join(str(c['concurrency']) for c in vs)} | "
                    + " / ".join(f"{c['vs_reference']['p50_ratio']:.2f}" for c in vs)
                    + "; "
                    + " / ".join(f"{c['vs_reference']['throughput_ratio']:.2f}" for c in vs)
                    + f" | {ref} | | p50 ≤ 1.10× |"
                )
            floor = [c for c in mine if "fork_floor" in c]
            if floor:
                c = floor[0]
                rows.append(
                    f"| sandbox `{name}` c=1 p50 / bare forked child of a warm interpreter (fork+run+exit) | "
                    f"{c['zerotir']['p50_ms']:.1f} ms / {c['fork_floor']['wall_ms']:.1f} ms = "
                    f"{c['p50_over_fork_floor']:.2f}× | run alone in the child {c['fork_floor']['run_ms']:.1f} ms | | "
                    + ("(target on the first-run row)" if name == "sympy" else "")
                    + " |"
                )
                ff = c.get("fork_floor_first")
                if ff:
                    rows.append(
                        f"| sandbox `{name}` c=1 p50 / the snippet's first run in a bare forked child (parent never ran it) | "
                        f"{c['zerotir']['p50_ms']:.1f} ms / {ff['wall_ms']:.1f} ms = "
                        f"{c['p50_over_fork_floor_first']:.2f}× | run alone in the child {ff['run_ms']:.1f} ms | | "
                        + ("≤ 1.25×" if name == "sympy" else "")
                        + " |"
                    )
        fl = sb.get("compute_floor_ms", {}).get("sympy")
        if fl:
            rows.append(
                f"| sympy snippet's own compute, no sandbox, warm interpreter (first run; repeat) | "
                f"{fl['first_run_ms']:.1f} ms; {fl['repeat_run_ms']:.1f} ms | | | |"
            )
        m = sb["memory"]
        rows.append(
            f"| sandbox memory (PSS): numpy+sympy / numpy / light fork server | "
            f"{m['forkserver_pss_mb_per_worker']} / {m.get('numpy_forkserver_pss_mb', '-')} / "
            f"{m['light_forkserver_pss_mb']} MB | | | |"
        )
    at = load("sandbox_attribution")
    if at:
        for arm, what in (
            ("no_exec_namespaces", "the same code without per-execution namespaces"),
            ("no_standby", "the same code without children forked ahead"),
            ("no_confinement", "the same code without per-execution confinement"),
        ):
            cells = [(k, v[arm]) for k, v in at["cells"].items() if arm in v and not k.endswith("c=1")]
            rows.append(
                f"| sandbox throughput vs {what} ({', '.join(k for k, _ in cells)}) | "
                + " / ".join(f"{v['throughput_ratio']:.2f}" for _, v in cells)
                + " | `bench/sandbox_attribution.py` | | what isolation costs |"
            )
    ns = load("namespace_cost")
    if ns:
        extra = ns["extra_ms_per_child"]
        rows.append(
            "| kernel cost per execution at saturation, no sandbox (user ns; + IPC ns; + mount ns; + tmpfs; all) | "
            + " / ".join(f"+{v:.2f}" for k, v in extra.items() if k != "fork")
            + f" ms | a bare fork ({ns['throughput_ratio_to_fork']['all']:.2f} of its throughput with all) | "
            "`bench/namespace_cost.py` | | what isolation costs |"
        )
    wu = load("sandbox_warmup")
    if wu:
        sm = wu["summary"]
        rows.append(
            f"| sympy time per execution, 9 held-out snippets (sum of medians): default warm-up | "
            f"{sm['default_warmup']['heldout_sum_ms']:.0f} ms | imports only {sm['imports_only']['heldout_sum_ms']:.0f} ms; "
            f"rare symbol names {sm['machinery_only']['heldout_sum_ms']:.0f} ms | "
            f"{sm['imports_only']['heldout_sum_ms'] / sm['default_warmup']['heldout_sum_ms']:.1f}×; "
            f"{sm['machinery_only']['heldout_sum_ms'] / sm['default_warmup']['heldout_sum_ms']:.2f}× |  |"
        )
    ro = load("rollout")
    if ro:
        for arm, label in (
            ("interactive", "tool rollout (one decode loop) / plain generation of the same model tokens"),
            ("rounds", "tool rollout (rounds, re-prefill) / plain generation of the same model tokens"),
            (
                "interactive_real_sandbox",
                "same, one decode loop, real sandbox sharing the 2 cores (wall clock)",
            ),
        ):
            a = ro["arms"][arm]
            rows.append(
                f"| {label} | {statistics.median(a['tool_s']):.2f} s | {statistics.median(a['plain_s']):.2f} s | "
                f"{a['ratio_median']:.3f} | {'≤ 1.15' if arm == 'interactive' else ''} |"
            )
    gpu = load("gpu_smoke")
    if gpu and "rollout_overhead" in gpu and "interactive" in gpu["rollout_overhead"]:
        g = gpu["rollout_overhead"]
        rows.append(
            f"| GPU ({gpu['gpu']}), toy model, {g['prompts']} prompts: tool rollout / plain generation | "
            f"one loop {g['interactive']['median']:.3f} | rounds {g['rounds']['median']:.3f} | | |"
        )
    tr = load("vs_trl")
    if tr:
        z, t = tr["results"]["zerotir"], tr["results"]["trl"]
        rows.append(
            f"| GRPO step, toy model, 8×8 samples (s/step; reward last 4 steps) | {z['sec_per_step']:.2f} s; "
            f"{z['reward_last4']:.3f} | TRL GRPOTrainer {t['sec_per_step']:.2f} s; {t['reward_last4']:.3f} | "
            f"{tr['speedup']:.2f}× | ≥ 1.25× |"
        )
    for name, flag in (("demo", ""), ("demo_chains", " --chains")):
        dm = load(name)
        if dm:
            n = dm.get("seeds", 1)
            rows.append(
                f"| `zerotir demo{flag}` wall clock, both arms (one seed; `bench/demo.py{flag} --seeds {n}` / {n}) "
                f"| {dm['seconds'] / n:.0f} s | | | ≤ 600 s |"
            )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
