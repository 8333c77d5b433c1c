"""The HTTP service and its client: API shapes, SandboxFusion compatibility, backpressure, load,
and a server killed mid-batch."""

import asyncio
import threading

import httpx
import pytest

from conftest import free_port, start_server
from zerotir.sandbox.client import HttpSandbox


def test_run_and_batch(server):
    url, _ = server
    r = httpx.post(f"{url}/run", json={"code": "print(2+2)"}).json()
    assert r["status"] == "ok" and r["stdout"] == "4\n" and r["exit_code"] == 0 and r["seconds"] >= 0
    r = httpx.post(f"{url}/run_batch", json={"requests": [{"code": f"print({i})"} for i in range(20)]}).json()
    assert [x["stdout"] for x in r["results"]] == [f"{i}\n" for i in range(20)]
    r = httpx.post(f"{url}/run", json={"code": "while 1: pass", "timeout": 0.5}).json()
    assert r["status"] == "timeout"


def test_session_replay(server):
    url, _ = server
    sid = httpx.post(f"{url}/session").json()["session_id"]
    other = httpx.post(f"{url}/session").json()["session_id"]
    httpx.post(f"{url}/run", json={"code": "y = 5", "session_id": sid})
    r = httpx.post(f"{url}/run", json={"code": "print(y * 2)", "session_id": sid}).json()
    assert r["stdout"] == "10\n"
    r = httpx.post(f"{url}/run", json={"code": "print(y)", "session_id": other}).json()
    assert r["status"] == "error"


def test_sandboxfusion_run_code_format(server):
    url, _ = server
    r = httpx.post(
        f"{url}/run_code", json={"code": "print('hi')", "language": "python", "run_timeout": 5}
    ).json()
    assert r["status"] == "Success"
    assert r["run_result"]["status"] == "Finished" and r["run_result"]["stdout"] == "hi\n"
    assert r["run_result"]["return_code"] == 0 and "execution_time" in r["run_result"]
    r = httpx.post(f"{url}/run_code", json={"code": "1/0", "language": "python"}).json()
    assert r["status"] == "Failed" and "ZeroDivisionError" in r["run_result"]["stderr"]
    r = httpx.post(
        f"{url}/run_code", json={"code": "while 1: pass", "language": "python", "run_timeout": 0.5}
    ).json()
    assert r["run_result"]["status"] == "TimeLimitExceeded"
    r = httpx.post(f"{url}/run_code", json={"code": "x", "language": "cpp"}).json()
    assert r["status"] == "SandboxError"


def test_sandbox_fusion_client_if_installed(server):
    sf = pytest.importorskip("sandbox_fusion")
    url, _ = server
    sf.set_endpoint(url)
    res = sf.run_code(sf.RunCodeRequest(code="print(1+1)", language="python"))
    assert res.run_result.stdout == "2\n"


def test_health_and_metrics(server):
    url, _ = server
    h = httpx.get(f"{url}/health").json()
    assert h["status"] == "ok" and h["isolation"] in ("bwrap", "none")
    m = httpx.get(f"{url}/metrics").text
    assert "zerotir_sandbox_executions_total" in m and "zerotir_sandbox_latency_seconds_bucket" in m
    assert "zerotir_sandbox_queue_depth" in m


def test_validation_error_is_clear(server):
    url, _ = server
    r = httpx.post(f"{url}/run", json={"cod": "print(1)"})
    assert r.status_code == 422 and "code" in r.text


def test_backpressure_429():
    port = free_port()
    proc = start_server(port, "--max-queue", "4", "--slots", "2")
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/run_batch", json={"requests": [{"code": "print(1)"} for _ in range(10)]}
        )
        assert r.status_code == 429 and r.headers["retry-after"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_load_2000_requests_64_clients(server):
    url, _ = server

    async def main():
        sem = asyncio.Semaphore(64)
        async with httpx.AsyncClient(
            base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as client:

            async def one(i):
                async with sem:
                    for _ in range(20):
                        r = await client.post("/run", json={"code": f"print({i})"})
                        if r.status_code == 200:
                            return i, r.json()
                        await asyncio.sleep(0.2)
                    raise AssertionError(f"request {i} never answered")

            async def batch(i):
                async with sem:
                    r = await client.post(
                        "/run_batch", json={"requests": [{"code": f"print({i}*100+{j})"} for j in range(10)]}
                    )
                    return i, r.json()

            singles = await asyncio.gather(*(one(i) for i in range(1500)))
            batches = await asyncio.gather(*(batch(i) for i in range(50)))
            return singles, batches

    singles, batches = asyncio.run(main())
    assert sorted(i for i, _ in singles) == list(range(1500))
    assert all(r["stdout"] == f"{i}\n" for i, r in singles)
    for i, r in batches:
        assert [x["stdout"] for x in r["results"]] == [f"{i * 100 + j}\n" for j in range(10)]  # in order
    assert len(singles) + sum(len(r["results"]) for _, r in batches) == 2000


def test_client_retries_through_server_restart():
    port = free_port()
    proc = start_server(port)
    client = HttpSandbox(f"http://127.0.0.1:{port}", retries=8, backoff_s=0.3, batch_size=10)
    results = {}

    def work():
        results["out"] = client.run_batch_sync(
            [f"import time; time.sleep(0.05); print({i})" for i in range(60)], 5
        )

    t = threading.Thread(target=work)
    t.start()
    proc.kill()
    proc.wait(10)
    proc2 = start_server(port)
    try:
        t.join(120)
        out = results["out"]
        assert [getattr(r, "stdout", None) for r in out] == [f"{i}\n" for i in range(60)]
    finally:
        client.close()
        proc2.terminate()
        proc2.wait(10)


def test_client_gives_infra_error_when_down():
    from zerotir.sandbox.pool import SandboxInfraError

    client = HttpSandbox(f"http://127.0.0.1:{free_port()}", retries=1, backoff_s=0.01)
    out = client.run_batch_sync(["print(1)"], 1)
    assert isinstance(out[0], SandboxInfraError)
    client.close()


def test_client_submit_futures(server):
    """`submit` (what the one-loop rollout uses) returns concurrent futures, from plain threads."""
    url, _ = server
    client = HttpSandbox(url)
    try:
        futs = [client.submit(f"print({i} * 3)", 5.0) for i in range(12)]
        assert [f.result(timeout=30).stdout for f in futs] == [f"{i * 3}\n" for i in range(12)]
        assert client.submit("print(z + 1)", 5.0, session=["z = 41"]).result(timeout=30).stdout == "42\n"
    finally:
        client.close()


def test_one_loop_rollout_through_http_sandbox(server):
    """The HF engine's one-loop rollout with code executed by the HTTP service: same trajectories as
    with the in-process sandbox (greedy decoding)."""
    from zerotir.models import load_causal_lm, load_tokenizer
    from zerotir.rollout import SamplingParams, ToolLoopConfig, get_template, run_tool_rollout
    from zerotir.rollout.hf_engine import HFEngine
    from zerotir.sandbox.base import LocalSandbox

    tok = load_tokenizer("toy")
    eng = HFEngine(load_causal_lm("toy"), tok)
    t = get_template("toy-zerotir")
    ps = [
        tok.encode(t.render(f"What is {e}?") + f" We compute {e} with Python.\n", add_special_tokens=False)
        for e in ("12 * 34", "7 + 8 * 9", "100 - 37")
    ]
    cfg, sp = ToolLoopConfig(max_tool_calls=2, max_response_len=160), SamplingParams(0.0, 1.0, 160)
    client, local = HttpSandbox(server[0]), LocalSandbox()
    try:
        via_http = run_tool_rollout(eng, client, ps, t, cfg, sp)
        in_proc = run_tool_rollout(eng, local, ps, t, cfg, sp)
    finally:
        client.close()
        local.close()
    assert sum(len(tr.tool_calls) for tr in via_http) >= 3
    for a, b in zip(via_http, in_proc):
        assert a.response_ids == b.response_ids and a.action_mask == b.action_mask
        assert [c.stdout for c in a.tool_calls] == [c.stdout for c in b.tool_calls]


def test_a_run_with_no_server_behind_its_url_fails_at_once(server, monkeypatch):
    """With nothing at `sandbox.url`, training ran to the end: every call failed after its retries
    (85 s a step), no code use, lower accuracy and nothing on the console (new-user review)."""
    import zerotir.sandbox.client as client
    from zerotir import build
    from zerotir.config import build_config
    from zerotir.errors import UsageError

    monkeypatch.setattr(client, "REACH_TIMEOUT_S", 0.5)
    nobody = build_config("toy-zerotir", overrides=["sandbox.mode=http", f"sandbox.url=http://127.0.0.1:{free_port()}"])
    with pytest.raises(UsageError, match="sandbox.url: no sandbox server answers at http://127.0.0.1:"):
        build.make_sandbox(nobody)
    there = build.make_sandbox(build_config("toy-zerotir", overrides=["sandbox.mode=http", f"sandbox.url={server[0]}"]))
    assert there.run_batch_sync(["print(3)"], 5)[0].stdout == "3\n"
    there.close()
