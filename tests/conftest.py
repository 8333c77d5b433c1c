import os
import socket
import subprocess
import sys
import time

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_cli(*args, timeout: float = 120):
    """`zerotir ...` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "zerotir.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def pool():
    from zerotir.sandbox.pool import ExecutorPool, PoolConfig

    p = ExecutorPool(PoolConfig(workers=1, slots_per_worker=8, memory_mb=512))
    yield p
    p.close()


@pytest.fixture(scope="session")
def local_sandbox(pool):
    from zerotir.sandbox.base import LocalSandbox

    return LocalSandbox(pool=pool)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, *extra: str) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "zerotir.cli", "sandbox", "serve", "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy in 60 s")


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start_server(port)
    yield f"http://127.0.0.1:{port}", port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-init tiny Llama with the project's byte tokenizer, saved like a hub model."""
    from zerotir.toy.model import build_tiny_model
    from zerotir.toy.tokenizer import build_byte_tokenizer

    d = tmp_path_factory.mktemp("tiny_model")
    tok = build_byte_tokenizer()
    model = build_tiny_model(tok, seed=0, hidden=48, layers=2)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)
