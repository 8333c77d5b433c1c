"""`zerotir sandbox serve`: the executor pool behind HTTP (FastAPI + uvicorn).

Endpoints: `POST /run`, `POST /run_batch`, `POST /session` and `DELETE /session/{id}`,
`POST /run_code` (SandboxFusion's request and response format, so veRL's and other clients work
unchanged: `stdin`, `files` and `memory_limit_MB` are honoured, `fetch_files` is refused), `GET
/health`, `GET /metrics` (Prometheus text).

Limits, all in `ServiceConfig`: request bodies past `max_body_bytes` get 413; past `max_queue`
accepted executions (counted before anything is awaited) the server answers 429 with Retry-After;
executions enter each group of fork servers through a fair scheduler (round-robin over clients,
named by the `X-Client-Id` header or else the connection), optionally with a queue deadline (503).
The event loop never blocks on the pool: `submit` only queues work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from zerotir.sandbox.pool import ExecutorPool, PoolConfig, SandboxInfraError
from zerotir.sandbox.scheduler import Admission, FairScheduler, QueueDeadlineError
from zerotir.sandbox.sessions import Session, SessionError, SessionStore
from zerotir.sandbox.types import ExecRequest, ExecResult
from zerotir.types import ToolCall

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class ServiceConfig:
    default_timeout: float = 10.0
    """Timeout of a call that names none (s)."""
    max_queue: int = 1024
    """Executions accepted and not finished before new requests get 429."""
    max_body_bytes: int = 16 << 20
    """Largest request body; larger ones get 413 before they are parsed."""
    dispatch_limit: int | None = None
    """Executions let into each fork-server group (light, numpy, full) at once (None: twice its
    slots, enough to keep it fed); the rest wait in the server, fairly."""
    queue_deadline_s: float | None = None
    """Longest an execution may wait for a pool slot before its request gets 503 (None: no limit)."""
    max_sessions: int = 4096
    """Live server-side sessions; when full (after expiring idle ones) a new one gets 429."""
    session_max_blocks: int = 64
    """Blocks a session records; a block past it gets 409."""
    session_max_bytes: int = 1 << 20
    """Code bytes a session records; a block past it gets 409."""
    session_ttl_s: float = 3600.0
    """A session unused this long is forgotten."""


class RunRequest(BaseModel):
    code: str
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds; finite and positive, clamped by the pool to `sandbox.max_timeout_s` (not capped here, so
    that raising that setting reaches HTTP callers too)."""
    session_id: str | None = None
    """A server-issued session (POST /session): its earlier blocks are replayed first."""
    replay: list[str] | None = None
    """Earlier blocks to replay first, kept by the client ([] = the first block of a session)."""


class RunBatchRequest(BaseModel):
    requests: list[RunRequest]


class RunCodeRequest(BaseModel):  # SandboxFusion
    code: str
    language: str = "python"
    compile_timeout: float = Field(10, allow_inf_nan=False)
    run_timeout: float = Field(10, gt=0, allow_inf_nan=False)
    memory_limit_MB: int = -1
    stdin: str | None = None
    files: dict[str, str | None] = {}
    fetch_files: list[str] = []


class _Metrics:
    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.lat_sum = 0.0
        self.count = 0
        self.rejected = 0
        self.infra_errors = 0

    def observe(self, tc: ToolCall) -> None:
        self.statuses[tc.status] = self.statuses.get(tc.status, 0) + 1
        self.count += 1
        self.lat_sum += tc.seconds
        for i, b in enumerate(LATENCY_BUCKETS):
            if tc.seconds <= b:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1

    def render(self, in_flight: int, workers: int) -> str:
        lines = ["# TYPE zerotir_sandbox_executions_total counter"]
        for s, n in sorted(self.statuses.items()):
            lines.append(f'zerotir_sandbox_executions_total{{status="{s}"}} {n}')
        lines += ["# TYPE zerotir_sandbox_latency_seconds histogram"]
        acc = 0
        for b, n in zip(LATENCY_BUCKETS, self.buckets):
            acc += n
            lines.append(f'zerotir_sandbox_latency_seconds_bucket{{le="{b}"}} {acc}')
        lines.append(f'zerotir_sandbox_latency_seconds_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"zerotir_sandbox_latency_seconds_sum {self.lat_sum}")
        lines.append(f"zerotir_sandbox_latency_seconds_count {self.count}")
        lines.append(f"zerotir_sandbox_queue_depth {in_flight}")
        lines.append(f"zerotir_sandbox_rejected_total {self.rejected}")
        lines.append(f"zerotir_sandbox_infra_errors_total {self.infra_errors}")
        lines.append(f"zerotir_sandbox_workers {workers}")
        return "\n".join(lines) + "\n"


def _decode_files(files: dict[str, str | None]) -> tuple[tuple[str, bytes], ...]:
    """SandboxFusion's files: name -> base64 content."""
    out = []
    for name, b64 in files.items():
        try:
            out.append((name, base64.b64decode(b64 or "", validate=True)))
        except (binascii.Error, ValueError):
            raise ValueError(f"file {name!r}: content is not valid base64") from None
    return tuple(out)


def _fusion_error(message: str) -> dict:
    return {
        "status": "SandboxError",
        "message": message,
        "compile_result": None,
        "run_result": None,
        "executor_pod_name": None,
        "files": {},
    }


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before the app sees it (by its
    Content-Length, or while reading a body sent without one)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _too_large(self, send) -> None:
        body = f'{{"detail": "request body over {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", ()):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            size += len(msg.get("body", b""))
            if size > self.max_bytes:
                return await self._too_large(send)
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return await self.app(scope, replay, send)


def create_app(
    pool_cfg: PoolConfig | None = None,
    cfg: ServiceConfig | None = None,
    *,
    pool: ExecutorPool | None = None,
    **fields,
) -> FastAPI:
    """The app; `fields` override single `ServiceConfig` fields (e.g. `max_queue=4`)."""
    cfg = dataclasses.replace(cfg or ServiceConfig(), **fields)
    app = FastAPI(title="zerotir sandbox", version="1")
    # what the app was built from, for the operator and the tests (`zerotir sandbox serve` reaches it)
    app.state.service_config = cfg
    app.state.pool_config = pool.cfg if pool is not None else (pool_cfg or PoolConfig())
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    metrics = _Metrics()
    admission = Admission(cfg.max_queue)
    sessions = SessionStore(
        cfg.max_sessions, cfg.session_max_blocks, cfg.session_max_bytes, cfg.session_ttl_s
    )
    state: dict = {"pool": pool, "schedulers": {}}

    def get_pool() -> ExecutorPool:
        if state["pool"] is None:
            raise SandboxInfraError("the executor pool is still starting")
        return state["pool"]

    @app.on_event("startup")
    async def _startup() -> None:
        if state["pool"] is None:
            state["pool"] = await asyncio.to_thread(ExecutorPool, app.state.pool_config)
        p = app.state.pool = state["pool"]  # app.state.pool: `zerotir sandbox serve` reports its isolation
        # One scheduler per group of fork servers that code is routed to, so that calls waiting
        # for a busy group never hold back calls another group could run now.
        for group in (p.servers, p.light, p.numpy):
            if group:
                capacity = cfg.dispatch_limit or 2 * p.cfg.slots_per_worker * len(group)
                state["schedulers"][id(group[0])] = FairScheduler(capacity, cfg.queue_deadline_s)

    @app.on_event("shutdown")
    async def _shutdown() -> None:
        if state["pool"] is not None:
            await asyncio.to_thread(state["pool"].close)

    def busy(n: int) -> JSONResponse | None:
        """Reserve n executions of the queue bound now, before anything is awaited."""
        if admission.try_take(n):
            return None
        metrics.rejected += 1
        return JSONResponse({"detail": "sandbox queue full"}, status_code=429, headers={"Retry-After": "1"})

    def client_of(http: Request) -> str:
        named = http.headers.get("x-client-id")
        if named:
            return named
        return f"{http.client.host}:{http.client.port}" if http.client else "-"

    async def execute(req: ExecRequest, client: str) -> ExecResult:
        """One admitted execution: wait fairly for a pool slot, run, give the slot back. (Its
        place in the queue bound is given back by the caller, see `admitted`.)"""
        pool = get_pool()
        sched: FairScheduler = state["schedulers"][id(pool.servers_for(req.code, req.replay)[0])]
        await sched.acquire(client)
        try:
            tc: ToolCall = await asyncio.wrap_future(pool.submit_request(req))
        finally:
            sched.release()
        metrics.observe(tc)
        return ExecResult(tc.status, tc.stdout, tc.stderr, tc.exit_code, tc.seconds)

    def admitted(coro) -> asyncio.Future:
        """Run one admitted execution as a task that gives its queue place back however it
        ends, even when cancelled before it started."""
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda _: admission.give_back())
        return task

    def to_exec(r: RunRequest) -> tuple[ExecRequest, Session | None]:
        session = None
        replay = None if r.replay is None else tuple(r.replay)
        if r.session_id is not None:
            session = sessions.get(r.session_id)
            sessions.check_room(session, r.code)
            replay = (*session.blocks, *(replay or ()))
        return ExecRequest(r.code, r.timeout or cfg.default_timeout, replay=replay), session

    async def run_one(r: RunRequest, prepared: tuple[ExecRequest, Session | None], client: str) -> dict:
        req, session = prepared
        res = await execute(req, client)
        if session is not None and res.status == "ok":
            sessions.record(session, r.code)
        return res.to_wire()

    @app.exception_handler(SandboxInfraError)
    async def _infra(_: Request, exc: SandboxInfraError) -> JSONResponse:
        metrics.infra_errors += 1
        return JSONResponse(
            {"detail": f"sandbox infrastructure error: {exc}"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(QueueDeadlineError)
    async def _deadline(_: Request, exc: QueueDeadlineError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(SessionError)
    async def _session(_: Request, exc: SessionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(ValueError)
    async def _bad_value(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The offending input is left out: it may be NaN or Infinity, which JSON cannot carry.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.post("/session")
    async def new_session():
        return {"session_id": sessions.create()}

    @app.delete("/session/{sid}")
    async def close_session(sid: str):
        sessions.close(sid)
        return {"closed": True}

    @app.post("/run")
    async def run(req: RunRequest, http: Request):
        prepared = to_exec(req)  # unknown session or full history: refused before queueing
        return busy(1) or await admitted(run_one(req, prepared, client_of(http)))

    @app.post("/run_batch")
    async def run_batch(req: RunBatchRequest, http: Request):
        prepared = [to_exec(r) for r in req.requests]
        rejected = busy(len(req.requests))
        if rejected:
            return rejected
        client = client_of(http)
        tasks = [admitted(run_one(r, p, client)) for r, p in zip(req.requests, prepared)]
        try:
            return {"results": list(await asyncio.gather(*tasks))}
        finally:
            for t in tasks:  # on a failure the others must not run on for nobody
                t.cancel()

    @app.post("/run_code")
    async def run_code(req: RunCodeRequest, http: Request):
        if req.language not in ("python", "python3"):
            return _fusion_error(f"language {req.language!r} is not supported (python only)")
        if req.fetch_files:
            return _fusion_error("fetch_files is not supported by this sandbox")
        try:
            files = _decode_files(req.files)
        except ValueError as e:
            return _fusion_error(str(e))
        memory = req.memory_limit_MB if req.memory_limit_MB > 0 else None
        ereq = ExecRequest(req.code, req.run_timeout, memory_mb=memory, stdin=req.stdin, files=files)
        get_pool()  # a pool that is not up answers 503 before taking a queue place
        rejected = busy(1)
        if rejected:
            return rejected
        t0 = time.monotonic()
        res = await admitted(execute(ereq, client_of(http)))
        run_status = {"timeout": "TimeLimitExceeded"}.get(res.status, "Finished")
        if res.status in ("error", "killed") and res.exit_code < 0:
            run_status = "Error"
        return {
            "status": "Success" if res.status in ("ok", "truncated") else "Failed",
            "message": "",
            "compile_result": None,
            "run_result": {
                "status": run_status,
                "execution_time": round(time.monotonic() - t0, 4),
                "return_code": res.exit_code if res.status != "timeout" else None,
                "stdout": res.stdout,
                "stderr": res.stderr,
            },
            "executor_pod_name": None,
            "files": {},
        }

    @app.get("/health")
    async def health():
        p = get_pool()
        return {
            "status": "ok",
            "isolation": p.isolation,
            "workers": len(p.servers),
            "in_flight": p.in_flight,
            "accepted": admission.count,
            "sessions": len(sessions),
        }

    @app.get("/metrics")
    async def metrics_text():
        p = get_pool()
        return PlainTextResponse(metrics.render(admission.count, len(p.servers)))

    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    slots: int = 8,
    isolation: str = "auto",
    max_queue: int = 1024,
    default_timeout: float = 10.0,
    cfg: ServiceConfig | None = None,
) -> None:
    import uvicorn

    cfg = dataclasses.replace(cfg or ServiceConfig(), max_queue=max_queue, default_timeout=default_timeout)
    app = create_app(PoolConfig(workers=workers, slots_per_worker=slots, isolation=isolation), cfg)
    uvicorn.run(app, host=host, port=port, log_level="warning")
