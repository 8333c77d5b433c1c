"""`HttpSandbox`: the async client of `zerotir sandbox serve`.

Connection pooling (one httpx.AsyncClient), batching (`/run_batch`), retries with exponential
backoff on connection errors, 5xx and 429 (honouring Retry-After), and a per-call deadline. Only
after the retries are spent does a call fail, with `SandboxInfraError`, which the rollout turns into
an excluded trajectory rather than an observation. A session's earlier blocks travel as the
request's `replay` list (the server stays stateless for rollouts) and are replayed there exactly as
the in-process sandbox does; every request names this client (`X-Client-Id`) for the server's fair
scheduling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import random
import secrets
import threading
import time
from collections.abc import Sequence

import httpx

from zerotir.sandbox.pool import SandboxInfraError
from zerotir.sandbox.types import ExecResult, check_timeout
from zerotir.types import ToolCall

REACH_TIMEOUT_S = 10.0
"""How long `check_reachable` waits for a server that is still starting."""


class HttpSandbox:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        retries: int = 6,
        backoff_s: float = 0.2,
        max_connections: int = 64,
        batch_size: int = 256,
    ):
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_connections = max_connections
        self.batch_size = batch_size
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.client_id = secrets.token_hex(8)

    def check_reachable(self, timeout_s: float | None = None) -> None:
        """Raise ConnectionError unless a server answers at `url` within `timeout_s` (any HTTP answer
        counts: a pool still starting says 503). A run with no server behind `sandbox.url` used to
        train to the end with every code call failing after its retries: no code use, lower
        accuracy and nothing on the console (new-user review)."""
        deadline = time.monotonic() + (REACH_TIMEOUT_S if timeout_s is None else timeout_s)
        while True:
            try:
                httpx.get(self.url + "/health", timeout=2.0)
                return
            except httpx.HTTPError as e:
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"no sandbox server answers at {self.url} ({e})") from None
            time.sleep(0.25)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            )
            self._client = httpx.AsyncClient(
                base_url=self.url, limits=limits, timeout=None, headers={"X-Client-Id": self.client_id}
            )
        return self._client

    async def _post(self, path: str, payload: dict, deadline_s: float) -> dict:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                resp = await self._http().post(path, json=payload, timeout=deadline_s)
                if resp.status_code == 429 or resp.status_code >= 500:
                    delay = float(resp.headers.get("Retry-After", 0) or 0)
                    last = SandboxInfraError(f"{path}: HTTP {resp.status_code} {resp.text[:200]}")
                    await asyncio.sleep(max(delay, self.backoff_s * 2**attempt) * (0.5 + random.random()))
                    continue
                resp.raise_for_status()
                return resp.json()
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last = e
                await asyncio.sleep(self.backoff_s * 2**attempt * (0.5 + random.random()))
        raise SandboxInfraError(f"sandbox at {self.url} failed after {self.retries + 1} tries: {last!r}")

    async def run(self, code: str, timeout_s: float = 10.0, session: Sequence[str] | None = None) -> ToolCall:
        return (await self.run_batch([code], timeout_s, [session]))[0]

    async def run_batch(self, codes, timeout_s=10.0, sessions=None) -> list[ToolCall]:
        timeout_s = check_timeout(timeout_s, 300.0)  # the server's own bound on a timeout
        sessions = sessions or [None] * len(codes)
        out: list[ToolCall] = []
        for i in range(0, len(codes), self.batch_size):
            chunk = codes[i : i + self.batch_size]
            reqs = []
            for c, s in zip(chunk, sessions[i : i + self.batch_size]):
                reqs.append(
                    {"code": c, "timeout": timeout_s, **({"replay": list(s)} if s is not None else {})}
                )
            data = await self._post("/run_batch", {"requests": reqs}, deadline_s=timeout_s * 2 + 60)
            out.extend(ExecResult.from_wire(r).tool_call(c) for c, r in zip(chunk, data["results"]))
        return out

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
        return self._loop

    def submit(self, code: str, timeout_s: float = 10.0, session: Sequence[str] | None = None) -> cf.Future:
        return asyncio.run_coroutine_threadsafe(self.run(code, timeout_s, session), self._ensure_loop())

    def run_batch_sync(self, codes, timeout_s=10.0, sessions=None) -> list[ToolCall | Exception]:
        fut = asyncio.run_coroutine_threadsafe(
            self.run_batch(codes, timeout_s, sessions), self._ensure_loop()
        )
        try:
            return list(fut.result())
        except SandboxInfraError as e:
            return [e] * len(codes)

    async def health(self) -> dict:
        return (await self._http().get("/health")).json()

    def close(self) -> None:
        if self._loop is not None and self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._client = None
        self._loop = None
