"""The benchmarks still run: each in its `--smoke` mode (tiny sizes, one round), results written to a
temporary directory (`ZEROTIR_BENCH_RESULTS`). They check that a bench runs and reports what it
measured, never a speed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(tmp_path: Path, script: str, *args: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
        "ZEROTIR_BENCH_RESULTS": str(tmp_path),
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.integration
def test_sandbox_bench_smoke_runs_the_pool_built_from_the_config(tmp_path):
    run_bench(tmp_path, "sandbox.py", "--smoke", "sandbox.slots=2")
    res = json.loads((tmp_path / "sandbox.json").read_text())
    (cell,) = res["cells"]
    assert (cell["snippet"], cell["concurrency"]) == ("print", 1)
    assert cell["zerotir"]["outputs_ok"] and cell["subprocess"]["outputs_ok"]
    assert res["memory"]["slots_per_worker"] == 2  # the override reached the pool


@pytest.mark.integration
def test_sandbox_warmup_bench_smoke(tmp_path):
    run_bench(tmp_path, "sandbox_warmup.py", "--smoke")
    res = json.loads((tmp_path / "sandbox_warmup.json").read_text())
    assert set(res["summary"]) == {"imports_only", "machinery_only", "default_warmup"}
    assert len(res["heldout_snippets"]) == 2 and res["rounds"] == 1


@pytest.mark.integration
def test_rollout_bench_smoke_measures_every_arm(tmp_path):
    run_bench(tmp_path, "rollout.py", "--smoke")
    res = json.loads((tmp_path / "rollout.json").read_text())
    assert set(res["arms"]) == {"interactive", "rounds", "interactive_real_sandbox"}
    assert res["prompts"] == 8 and all(
        len(a["ratios"]) == 1 and a["ratios"][0] > 0 for a in res["arms"].values()
    )


@pytest.mark.slow
def test_gpu_smoke_dry_runs_on_cpu(tmp_path):
    run_bench(tmp_path, "gpu_smoke.py", "--device", "cpu", "--smoke", "--isolation", "none")
    res = json.loads((tmp_path / "gpu_smoke.json").read_text())
    for check in ("logprobs_fp32", "logprobs_bf16", "rollout_overhead", "train"):
        assert "error" not in res[check], res[check].get("error")
    assert res["logprobs_fp32"]["tool_calls"] > 0 and res["train"]["resumed_from_step"] == 3


@pytest.mark.slow
def test_async_pipeline_bench_smoke(tmp_path):
    pytest.importorskip("ray")
    run_bench(tmp_path, "async_pipeline.py", "--smoke")
    res = json.loads((tmp_path / "async_pipeline.json").read_text())
    assert {r["layout"] for r in res["runs"]} == {"sync_1w", "async_s1_1w"}
    assert all(len(r["step_s"]) == 2 for r in res["runs"])


@pytest.mark.slow
def test_vs_trl_bench_smoke(tmp_path):
    pytest.importorskip("trl")
    run_bench(tmp_path, "vs_trl.py", "--smoke")
    res = json.loads((tmp_path / "vs_trl.json").read_text())
    assert res["steps"] == 2 and set(res["results"]) == {"trl", "zerotir"}


@pytest.mark.slow
def test_weight_transport_bench_smoke(tmp_path):
    """Both transports time their syncs, and every sync reached the worker (it holds the last version)."""
    pytest.importorskip("ray")
    run_bench(tmp_path, "weight_transport.py", "--smoke")
    res = json.loads((tmp_path / "weight_transport.json").read_text())
    assert [r["transport"] for r in res["runs"]] == ["object_store", "collective"]
    for r in res["runs"]:
        assert r["worker_versions_after"] == [2] and len(r["raw_s"]) == 1
        assert r["model"]["bytes"] > 0
    assert res["runs"][1]["backend"] == "gloo"


@pytest.mark.integration
def test_namespace_cost_bench_smoke_measures_every_step(tmp_path):
    run_bench(tmp_path, "namespace_cost.py", "--smoke")
    res = json.loads((tmp_path / "namespace_cost.json").read_text())
    steps = ["fork", "user", "user+ipc", "user+mnt", "user+mnt+tmpfs", "all"]
    assert list(res["throughput_ratio_to_fork"]) == steps and res["throughput_ratio_to_fork"]["fork"] == 1.0
    assert all(rd[k] > 0 for rd in res["rounds"] for k in steps) and len(res["rounds"]) == 1


@pytest.mark.unit
def test_sandbox_attribution_variants_each_change_the_current_fork_server(tmp_path):
    """Each variant of bench/sandbox_attribution.py replaces text that is in the current fork server
    exactly once, so a refactor cannot turn a variant silently into the current code."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import sandbox_attribution as attr
    finally:
        sys.path.remove(str(ROOT / "bench"))
    current = (ROOT / attr.FORKSERVER).read_text()
    for name, (old, new) in attr.VARIANTS.items():
        changed = (attr.variant_tree(tmp_path, name) / attr.FORKSERVER).read_text()
        assert changed != current and changed == current.replace(old, new), name
        compile(changed, name, "exec")


@pytest.mark.integration
def test_zerorl_arm_screen_reports_greedy_and_sampled_accuracy(tmp_path):
    run_bench(tmp_path, "zerorl_arm.py", "--name", "smoke", "--screen", "--sampled", "2", "--out",
              str(tmp_path / "runs"), "--seeds", "0", "--", "trainer.total_steps=1", "trainer.prompts_per_step=2",
              "data.eval_size=8", "log.progress=false")  # fmt: skip
    res = json.loads((tmp_path / "zerorl_arm_smoke.json").read_text())
    (run,) = res["runs"]
    for key in ("base_sampled", "final_sampled", "final"):
        assert 0.0 <= run[key]["accuracy"] <= 1.0 and 0.0 <= run[key]["accuracy_easy"] <= 1.0
    assert res["sampled_final_accuracy_easy"]["mean"] == run["final_sampled"]["accuracy_easy"]
