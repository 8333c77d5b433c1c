"""Server-side stateful sessions: ids the server issues, caps on their number and history.

An id is 32 random bytes from `secrets` (unguessable), so a client can reach only the sessions it
was given. The store is bounded: at most `max_sessions` live at once (idle ones expire after
`ttl_s`; when the store is still full a new session is refused, never someone else's evicted), and
each holds at most `max_blocks` blocks and `max_bytes` of code.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

__all__ = ["SessionStore", "SessionError", "Session"]


class SessionError(RuntimeError):
    """A session request the store refuses; `status` is the HTTP status to answer with."""

    def __init__(self, msg: str, status: int):
        super().__init__(msg)
        self.status = status


@dataclass
class Session:
    blocks: list[str] = field(default_factory=list)
    nbytes: int = 0
    last_used: float = 0.0


class SessionStore:
    def __init__(self, max_sessions: int, max_blocks: int, max_bytes: int, ttl_s: float):
        self.max_sessions, self.max_blocks, self.max_bytes, self.ttl_s = (
            max_sessions,
            max_blocks,
            max_bytes,
            ttl_s,
        )
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if len(self._sessions) >= self.max_sessions:
            self._sessions = {k: s for k, s in self._sessions.items() if now - s.last_used <= self.ttl_s}
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(f"too many sessions ({self.max_sessions}); close one or retry later", 429)
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(last_used=now)
        return sid

    def get(self, sid: str, now: float | None = None) -> Session:
        s = self._sessions.get(sid)
        now = time.monotonic() if now is None else now
        if s is None or now - s.last_used > self.ttl_s:
            self._sessions.pop(sid, None)
            raise SessionError("unknown or expired session id (create one with POST /session)", 404)
        s.last_used = now
        return s

    def check_room(self, s: Session, code: str) -> None:
        """Refuse a block that the session could not record if it succeeded."""
        if len(s.blocks) >= self.max_blocks:
            raise SessionError(f"session history is full ({self.max_blocks} blocks)", 409)
        if s.nbytes + len(code) > self.max_bytes:
            raise SessionError(f"session history is full ({self.max_bytes} bytes of code)", 409)

    def record(self, s: Session, code: str) -> None:
        s.blocks.append(code)
        s.nbytes += len(code)

    def close(self, sid: str) -> None:
        self._sessions.pop(sid, None)
