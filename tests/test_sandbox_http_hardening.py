"""The HTTP service against the findings of issue 15: a frozen event loop, a dishonest queue bound,
no body limit, unfair queueing, NaN timeouts, guessable or poisonable sessions, SandboxFusion fields
ignored, and a client replay that rewrote the code. Waits are bounded to detect a hang; none
asserts a speed."""

import base64
import concurrent.futures as cf
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import start_server
from zerotir.sandbox.client import HttpSandbox
from zerotir.sandbox.pool import ExecutorPool, PoolConfig
from zerotir.sandbox.server import create_app

HANG_S = 60


def small_pool() -> ExecutorPool:
    return ExecutorPool(
        PoolConfig(
            workers=1, light_worker=False, numpy_worker=False, preimport=(), warmup="", slots_per_worker=2
        )
    )


@pytest.fixture(scope="module")
def app_client():
    """The app in-process over one light fork server, with small session caps."""
    pool = small_pool()
    app = create_app(pool=pool, session_max_blocks=2, max_body_bytes=1 << 20)
    with TestClient(app) as c:
        yield c
    pool.close()


def test_health_answers_while_a_deadlocking_batch_runs():
    """Large requests while outputs flow used to deadlock the pool, and since the event loop called
    the pool synchronously the whole server stopped answering, /health included."""
    from conftest import free_port

    port = free_port()
    proc = start_server(port, "--slots", "2")
    url = f"http://127.0.0.1:{port}"
    code = "# " + "x" * 80_000 + "\nprint('y' * 200_000)"
    try:
        with cf.ThreadPoolExecutor(1) as ex:
            batch = ex.submit(
                httpx.post, f"{url}/run_batch", json={"requests": [{"code": code}] * 120}, timeout=HANG_S
            )
            time.sleep(0.5)
            assert httpx.get(f"{url}/health", timeout=HANG_S).status_code == 200
            r = batch.result(timeout=HANG_S)
        assert r.status_code == 200 and all(x["status"] == "truncated" for x in r.json()["results"])
    finally:
        proc.terminate()
        proc.wait(10)


def test_queue_bound_holds_for_concurrent_batches():
    """The bound was checked before the awaited gather, so concurrent batches all passed it
    (max_queue 100 -> 719 in flight). Now no more than max_queue executions are ever accepted."""
    import asyncio

    from conftest import free_port

    port = free_port()
    proc = start_server(port, "--max-queue", "20", "--slots", "2")
    url = f"http://127.0.0.1:{port}"
    body = {"requests": [{"code": "import time; time.sleep(0.3)"}] * 10}

    async def main():
        peak = 0
        async with httpx.AsyncClient(
            base_url=url, timeout=HANG_S, limits=httpx.Limits(max_connections=64)
        ) as c:
            posts = [asyncio.ensure_future(c.post("/run_batch", json=body)) for _ in range(40)]
            while not all(p.done() for p in posts):
                h = (await c.get("/health")).json()
                peak = max(peak, h["in_flight"], h.get("accepted", 0))
            return [p.result().status_code for p in posts], peak

    try:
        codes, peak = asyncio.run(main())
        assert 429 in codes and 200 in codes
        assert peak <= 20
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_probe_is_not_queued_behind_another_clients_batch():
    """Executions entered the pool first come, first served: one client's batch delayed another
    client's single call until the whole batch had run. Now clients take turns."""
    from conftest import free_port

    port = free_port()
    proc = start_server(port, "--slots", "1")
    url = f"http://127.0.0.1:{port}"
    try:
        with cf.ThreadPoolExecutor(1) as ex:
            big = ex.submit(
                httpx.post,
                f"{url}/run_batch",
                json={"requests": [{"code": "import time; time.sleep(0.4)"}] * 30},
                headers={"X-Client-Id": "batch"},
                timeout=HANG_S,
            )
            time.sleep(1.0)
            r = httpx.post(
                f"{url}/run", json={"code": "print(1)"}, headers={"X-Client-Id": "probe"}, timeout=HANG_S
            )
            assert r.json()["stdout"] == "1\n"
            assert not big.done(), "the probe waited for the other client's whole batch"
            assert big.result(timeout=HANG_S).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_body_over_the_limit_is_413(app_client):
    r = app_client.post("/run", json={"code": "#" + "x" * (2 << 20)})
    assert r.status_code == 413
    assert app_client.post("/run", json={"code": "print(1)"}).json()["stdout"] == "1\n"


@pytest.mark.parametrize("path,field", [("/run", "timeout"), ("/run_code", "run_timeout")])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_timeouts_are_422(app_client, path, field, value):
    """NaN and Infinity used to answer 500 (or crash the fork server)."""
    body = f'{{"code": "print(1)", "{field}": {value}}}'
    r = app_client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and field in r.text


def test_a_timeout_above_the_old_http_cap_is_clamped_by_the_pool_not_refused(app_client):
    """The request model capped timeouts at 300 s whatever `sandbox.max_timeout_s` said (422 above)."""
    r = app_client.post("/run", json={"code": "print(1)", "timeout": 1000})
    assert r.status_code == 200 and r.json()["stdout"] == "1\n"


def test_sessions_are_issued_by_the_server_and_capped(app_client):
    """Any client naming a session id read its variables; ids are now issued by the server."""
    r = app_client.post("/run", json={"code": "print(1)", "session_id": "s1"})
    assert r.status_code == 404
    sid = app_client.post("/session").json()["session_id"]
    assert len(sid) >= 32
    assert app_client.post("/run", json={"code": "a = 1", "session_id": sid}).json()["status"] == "ok"
    assert app_client.post("/run", json={"code": "b = a + 1", "session_id": sid}).json()["status"] == "ok"
    r = app_client.post("/run", json={"code": "print(b)", "session_id": sid})
    assert r.status_code == 409 and "full" in r.text  # session_max_blocks=2


def test_os_exit_does_not_poison_a_server_session(app_client):
    sid = app_client.post("/session").json()["session_id"]
    r = app_client.post("/run", json={"code": "import os\nos._exit(0)", "session_id": sid}).json()
    assert r["status"] == "ok"
    r = app_client.post("/run", json={"code": "print('alive')", "session_id": sid}).json()
    assert (r["status"], r["stdout"]) == ("ok", "alive\n")


def test_run_code_honours_stdin_files_and_memory(app_client):
    """`stdin`, `files` and `memory_limit_MB` of SandboxFusion's request were silently ignored."""
    r = app_client.post("/run_code", json={"code": "print(int(input()) * 2)", "stdin": "21\n"}).json()
    assert r["run_result"]["stdout"] == "42\n"
    files = {"data/in.txt": base64.b64encode(b"hello").decode()}
    r = app_client.post(
        "/run_code", json={"code": "print(open('data/in.txt').read())", "files": files}
    ).json()
    assert r["run_result"]["stdout"] == "hello\n"
    r = app_client.post(
        "/run_code",
        json={"code": "x = bytearray(300 * 1024 * 1024)\nprint('allocated')", "memory_limit_MB": 64},
    ).json()
    assert r["status"] == "Failed" and "allocated" not in r["run_result"]["stdout"]
    r = app_client.post("/run_code", json={"code": "print(1)", "files": {"../escape": ""}})
    assert r.status_code == 422
    r = app_client.post("/run_code", json={"code": "print(1)", "fetch_files": ["out.txt"]}).json()
    assert r["status"] == "SandboxError" and "fetch_files" in r["message"]
    assert app_client.get("/health").json()["accepted"] == 0  # every queue place given back


@pytest.fixture(scope="module")
def http_sandbox(server):
    client = HttpSandbox(server[0])
    yield client
    client.close()


def test_client_replay_keeps_the_code_as_written(http_sandbox):
    """The client inlined replayed blocks re-indented in front of the new one: multi-line strings
    changed, `from __future__` became a SyntaxError and traceback line numbers shifted."""
    sb = http_sandbox
    history = ['s = """a\nb"""']
    r = sb.run_batch_sync(["print(repr(s))"], 5, [history])[0]
    assert r.stdout == "'a\\nb'\n"
    r = sb.run_batch_sync(["from __future__ import annotations\nprint(s.count('\\n'))"], 5, [history])[0]
    assert (r.status, r.stdout) == ("ok", "1\n")
    r = sb.run_batch_sync(["x = 1\n1 / 0"], 5, [history])[0]
    assert r.status == "error" and "line 2" in r.stderr
    block = "import random\nv = random.random()\nprint(v)"
    first = sb.run_batch_sync([block], 5, [[]])[0]
    assert sb.run_batch_sync(["print(v)"], 5, [[block]])[0].stdout == first.stdout
