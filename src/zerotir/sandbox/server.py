"""`zerotir sandbox serve`: the executor pool behind HTTP (FastAPI + uvicorn).

Endpoints: `POST /run`, `POST /run_batch`, `POST /run_code` (SandboxFusion's request and response
format, so veRL's and other clients work unchanged), `GET /health`, `GET /metrics` (Prometheus text).
The queue is bounded: past `max_queue` executions in flight the server answers 429 with Retry-After
instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from zerotir.sandbox.base import as_request
from zerotir.sandbox.pool import ExecutorPool, PoolConfig, SandboxInfraError
from zerotir.types import ToolCall

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RunRequest(BaseModel):
    code: str
    timeout: float | None = Field(default=None, gt=0, le=300)
    session_id: str | None = None


class RunBatchRequest(BaseModel):
    requests: list[RunRequest]


class RunCodeRequest(BaseModel):  # SandboxFusion
    code: str
    language: str = "python"
    compile_timeout: float = 10
    run_timeout: float = 10
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


def create_app(
    pool_cfg: PoolConfig | None = None,
    *,
    default_timeout: float = 10.0,
    max_queue: int = 1024,
    max_sessions: int = 4096,
    pool: ExecutorPool | None = None,
) -> FastAPI:
    app = FastAPI(title="zerotir sandbox", version="1")
    state: dict = {"pool": pool, "metrics": _Metrics(), "sessions": OrderedDict()}

    def get_pool() -> ExecutorPool:
        if state["pool"] is None:
            state["pool"] = ExecutorPool(pool_cfg or PoolConfig())
        return state["pool"]

    @app.on_event("startup")
    async def _startup() -> None:
        await asyncio.to_thread(get_pool)

    @app.on_event("shutdown")
    async def _shutdown() -> None:
        if state["pool"] is not None:
            state["pool"].close()

    def busy(n: int) -> JSONResponse | None:
        if get_pool().in_flight + n > max_queue:
            state["metrics"].rejected += 1
            return JSONResponse(
                {"detail": "sandbox queue full"}, status_code=429, headers={"Retry-After": "1"}
            )
        return None

    def session_history(sid: str | None) -> list[str] | None:
        if sid is None:
            return None
        sessions: OrderedDict = state["sessions"]
        hist = sessions.setdefault(sid, [])
        sessions.move_to_end(sid)
        while len(sessions) > max_sessions:
            sessions.popitem(last=False)
        return hist

    async def execute(req: RunRequest) -> dict:
        hist = session_history(req.session_id)
        fut = get_pool().submit_request(as_request(req.code, req.timeout or default_timeout, hist))
        tc: ToolCall = await asyncio.wrap_future(fut)
        state["metrics"].observe(tc)
        if hist is not None and tc.status == "ok":
            hist.append(req.code)
        return {
            "status": tc.status,
            "stdout": tc.stdout,
            "stderr": tc.stderr,
            "exit_code": tc.exit_code,
            "seconds": tc.seconds,
        }

    @app.exception_handler(SandboxInfraError)
    async def _infra(_: Request, exc: SandboxInfraError) -> JSONResponse:
        state["metrics"].infra_errors += 1
        return JSONResponse(
            {"detail": f"sandbox infrastructure error: {exc}"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.post("/run")
    async def run(req: RunRequest):
        return busy(1) or await execute(req)

    @app.post("/run_batch")
    async def run_batch(req: RunBatchRequest):
        rejected = busy(len(req.requests))
        if rejected:
            return rejected
        return {"results": list(await asyncio.gather(*(execute(r) for r in req.requests)))}

    @app.post("/run_code")
    async def run_code(req: RunCodeRequest):
        if req.language not in ("python", "python3"):
            return {
                "status": "SandboxError",
                "message": f"language {req.language!r} is not supported (python only)",
                "compile_result": None,
                "run_result": None,
                "executor_pod_name": None,
                "files": {},
            }
        rejected = busy(1)
        if rejected:
            return rejected
        t0 = time.monotonic()
        res = await execute(RunRequest(code=req.code, timeout=min(max(req.run_timeout, 0.1), 300)))
        run_status = {"timeout": "TimeLimitExceeded"}.get(res["status"], "Finished")
        if res["status"] in ("error", "killed") and res["exit_code"] < 0:
            run_status = "Error"
        return {
            "status": "Success" if res["status"] in ("ok", "truncated") else "Failed",
            "message": "",
            "compile_result": None,
            "run_result": {
                "status": run_status,
                "execution_time": round(time.monotonic() - t0, 4),
                "return_code": res["exit_code"] if res["status"] != "timeout" else None,
                "stdout": res["stdout"],
                "stderr": res["stderr"],
            },
            "executor_pod_name": None,
            "files": {},
        }

    @app.get("/health")
    async def health():
        p = get_pool()
        return {"status": "ok", "isolation": p.isolation, "workers": len(p.servers), "in_flight": p.in_flight}

    @app.get("/metrics")
    async def metrics():
        p = get_pool()
        return PlainTextResponse(state["metrics"].render(p.in_flight, len(p.servers)))

    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    slots: int = 8,
    isolation: str = "auto",
    max_queue: int = 1024,
    default_timeout: float = 10.0,
) -> None:
    import uvicorn

    app = create_app(
        PoolConfig(workers=workers, slots_per_worker=slots, isolation=isolation),
        max_queue=max_queue,
        default_timeout=default_timeout,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
