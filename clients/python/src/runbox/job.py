"""The job view the server answers with (`GET /jobs/<id>`, `/execute`, cancel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Statuses after which a job never changes again.
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})


def _timestamp(value: Any) -> datetime | None:
    # The server writes RFC 3339 in UTC with a trailing `Z`, which fromisoformat reads since 3.11.
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Job:
    """One job as the server last described it.

    Fields that do not apply yet (a queued job has no `started_at`, a running one no
    `result`) are None. `raw` is the decoded answer as it came, for fields this class
    does not know about.
    """

    id: str
    #: `queued`, `running`, `succeeded`, `failed`, `timed_out` or `cancelled`.
    status: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    #: The keyword arguments `main` was called with, exactly as sent.
    args: dict[str, Any] | None
    #: What `main()` returned, once the job succeeded.
    result: Any
    stdout: str | None
    stdout_truncated: bool
    stderr: str | None
    stderr_truncated: bool
    #: What went wrong, for people (for `exception`, the script's traceback).
    error: str | None
    #: Why the job did not succeed, for programs: `exception`, `timeout`, `memory_limit`, ...
    error_kind: str | None
    #: 1-based position of a syntax error.
    line: int | None
    column: int | None
    exit_code: int | None
    signal: str | None
    duration_ms: int | None
    cpu_ms: int | None
    peak_memory_bytes: int | None
    #: The job's limits: seconds of wall time and MiB of memory.
    timeout: float | None
    memory_mb: int | None
    attempt: int | None
    worker_id: str | None
    request_id: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """True once the job has reached a status it will never leave."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Build a Job from a decoded job view; missing fields become None (or False)."""
        get = data.get
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            created_at=_timestamp(get("created_at")),
            started_at=_timestamp(get("started_at")),
            finished_at=_timestamp(get("finished_at")),
            args=get("args"),
            result=get("result"),
            stdout=get("stdout"),
            stdout_truncated=bool(get("stdout_truncated", False)),
            stderr=get("stderr"),
            stderr_truncated=bool(get("stderr_truncated", False)),
            error=get("error"),
            error_kind=get("error_kind"),
            line=get("line"),
            column=get("column"),
            exit_code=get("exit_code"),
            signal=get("signal"),
            duration_ms=get("duration_ms"),
            cpu_ms=get("cpu_ms"),
            peak_memory_bytes=get("peak_memory_bytes"),
            timeout=get("timeout"),
            memory_mb=get("memory_mb"),
            attempt=get("attempt"),
            worker_id=get("worker_id"),
            request_id=get("request_id"),
            raw=data,
        )
