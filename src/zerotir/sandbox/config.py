"""The `sandbox` section of the config tree (`RunConfig.sandbox`), beside the components it builds.

It lives here rather than in `zerotir/config.py` to keep that module small; `zerotir.config`
re-exports it, and `zerotir.build` turns it into the pool's `PoolConfig`, the service's
`ServiceConfig` and the HTTP client (tests/test_seams.py checks the defaults agree).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """The `sandbox` section of the run config: where code runs and every knob of the pool, the
    service and the client. `zerotir.build` makes `PoolConfig`, `ServiceConfig` and the client from
    it, so `train`, `eval` and `sandbox serve` reach the same knobs with `sandbox.*=value`."""

    # the same settings as the other sections (zerotir.config._Section)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    mode: Literal["local", "http"] = "local"
    """local: an in-process executor pool; http: a `zerotir sandbox serve` at `url`."""
    url: str = "http://127.0.0.1:8080"
    """Address of the sandbox service (mode=http)."""
    workers: int = Field(1, ge=1)
    """Fork-server processes, each in its own sandbox."""
    slots: int = Field(8, ge=1)
    """Concurrent executions per worker."""
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    """bwrap (namespaces; required on shared machines) | auto (bwrap when available) | none."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space allowance per execution, on top of the pre-imported heap."""
    retries: int = Field(2, ge=0)
    """Resubmissions of an execution after an infrastructure failure before its trajectory is excluded."""
    standby: int = Field(1, ge=0)
    """Children each fork server keeps forked ahead of requests (0: fork on arrival)."""
    huge_pages: bool = True
    """Back each fork server's imported heap with 2 MiB pages where the kernel allows (faster forks)."""
    light_worker: bool = True
    """Route code that imports no heavy library to an extra small fork server (lower latency)."""
    numpy_worker: bool = True
    """Route code that uses numpy but no other heavy library to an extra numpy-only fork server."""
    seccomp: bool = False
    """Seccomp filter per execution (no new namespaces, mounts, ptrace, keyrings, bpf, io_uring; x86_64/aarch64); slower calls."""
    memory_cgroup: bool = False
    """Bound all processes of one execution together by a memory cgroup per slot (root, cgroup v1)."""
    start_timeout_s: float = Field(120.0, gt=0)
    """Seconds a fork server may take to import and warm up before it counts as failed."""
    max_timeout_s: float = Field(300.0, gt=0)
    """Longest per-execution timeout the pool accepts; longer ones are clamped."""
    replay_timeout_s: float = Field(10.0, ge=0)
    """Extra seconds a stateful call gets to replay its session's earlier blocks."""
    watchdog_grace_s: float = Field(30.0, gt=0)
    """A fork server silent this long past its calls' longest timeout is killed and replaced."""
    watchdog_interval_s: float = Field(1.0, gt=0)
    """How often the pool's watchdog looks for silent fork servers."""
    client_retries: int = Field(6, ge=0)
    """HTTP client: retries on connection errors, 5xx and 429 before a call fails (mode=http)."""
    client_backoff_s: float = Field(0.2, gt=0)
    """HTTP client: first retry delay, doubled each retry, jittered (Retry-After wins when longer)."""
    client_max_connections: int = Field(64, ge=1)
    """HTTP client: pooled connections to the service."""
    client_batch_size: int = Field(256, ge=1)
    """HTTP client: executions per /run_batch request."""
    server_max_queue: int = Field(1024, ge=1)
    """Service: executions in flight before it answers 429 (`zerotir sandbox serve`)."""
    server_max_sessions: int = Field(4096, ge=1)
    """Service: stateful sessions kept (least recently used dropped first)."""
    server_timeout_s: float = Field(10.0, gt=0)
    """Service: per-execution timeout when a request names none."""
    server_max_body_bytes: int = Field(16 << 20, ge=1)
    """Service: largest request body; larger ones get 413 before they are parsed."""
    server_dispatch_limit: int | None = Field(None, ge=1)
    """Service: executions let into each fork-server group at once (None: twice its slots)."""
    server_queue_deadline_s: float | None = Field(None, gt=0)
    """Service: longest an execution may wait for a pool slot before its request gets 503 (None: no limit)."""
    server_session_max_blocks: int = Field(64, ge=1)
    """Service: code blocks one session records; a block past it gets 409."""
    server_session_max_bytes: int = Field(1 << 20, ge=1)
    """Service: code bytes one session records; a block past it gets 409."""
    server_session_ttl_s: float = Field(3600.0, gt=0)
    """Service: a session unused this long is forgotten."""
