"""Typed errors, one per outcome a caller may want to handle differently.

Every error's message is the server's own `error` text. The classes follow the server's stable
`code` (or, for a job, its `error_kind`), never the wording of the message.
"""

from __future__ import annotations

from typing import Any

from .job import Job


class RunboxError(Exception):
    """Base of every error this client raises for an answer from the server.

    `status` is the HTTP status; for a failed job found by `Runbox.wait`, it is the status
    `/execute` gives that outcome, so both paths raise identical errors. `code` is the server's
    stable code, `body` the decoded answer (its text when it was not JSON), `job` the finished
    job when the error is about one (else None), and `retry_after` the seconds of a
    `Retry-After` header, when the server sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        job: Job | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.job = job
        self.retry_after = retry_after

    @property
    def stdout(self) -> str | None:
        """What the job printed before it failed (None without a job)."""
        return self.job.stdout if self.job else None

    @property
    def stderr(self) -> str | None:
        """What the job wrote to stderr before it failed (None without a job)."""
        return self.job.stderr if self.job else None

    def _detail(self, name: str) -> object:
        return self.body.get(name) if isinstance(self.body, dict) else None


class ValidationError(RunboxError):
    """The request or the script was refused before running: a syntax error, no usable
    `main`, `args` that do not fit `main`, or a malformed request (`field` names the culprit).

    A syntax error only `compile()` in the sandbox catches fails the job instead of the
    request; it is raised as this too, so callers need one `except` for both.
    """

    @property
    def line(self) -> int | None:
        """1-based line of a syntax error."""
        line = self._detail("line")
        return line if isinstance(line, int) else None

    @property
    def column(self) -> int | None:
        """1-based column of a syntax error."""
        column = self._detail("column")
        return column if isinstance(column, int) else None

    @property
    def field(self) -> str | None:
        """For `invalid_request`, the request field (or query parameter) at fault."""
        field = self._detail("field")
        return field if isinstance(field, str) else None


class ScriptError(RunboxError):
    """The script ran and failed: `main()` raised (`exception`), returned something that is
    not JSON (`result_not_json`), exited (`exited`), was killed by a signal (`killed`), or
    returned too large a result (`output_limit`). `code` says which."""

    @property
    def traceback(self) -> str | None:
        """For `exception`, the traceback of the script's own frames."""
        return self.message if self.code == "exception" else None


class Timeout(RunboxError):
    """The script ran past its `timeout` and was killed (`stdout` keeps what it printed)."""


class MemoryLimit(RunboxError):
    """The script went past its `memory_mb` and was killed."""


class Cancelled(RunboxError):
    """The job was cancelled before it finished."""


class Unauthenticated(RunboxError):
    """No API key, or one the server does not know (or has revoked)."""


class QuotaExceeded(RunboxError):
    """The API key is past one of its quotas; nothing was queued."""

    @property
    def quota(self) -> str | None:
        """Which quota: `max_timeout`, `max_memory_mb`, `max_queued`, `submissions_per_minute`."""
        quota = self._detail("quota")
        return quota if isinstance(quota, str) else None

    @property
    def quota_limit(self) -> float | None:
        """The quota's value (seconds for `max_timeout`)."""
        limit = self._detail("quota_limit")
        return float(limit) if isinstance(limit, (int, float)) else None


class QueueFull(RunboxError):
    """The server's queue is full; retry after `retry_after` seconds."""


class NotFound(RunboxError):
    """No such job, or one that belongs to another API key (the server does not tell which)."""


class ServerError(RunboxError):
    """The server could not do its part: the sandbox could not be set up, workers kept dying,
    the job store is unavailable, it is overloaded, or the answer was not one it documents."""


_CLASS_BY_CODE: dict[str, type[RunboxError]] = {
    **dict.fromkeys(
        [
            "syntax_error",
            "missing_main",
            "main_signature",
            "invalid_request",
            "invalid_json",
            "invalid_job_id",
            "invalid_idempotency_key",
            "payload_too_large",
        ],
        ValidationError,
    ),
    **dict.fromkeys(
        ["exception", "result_not_json", "exited", "killed", "output_limit"], ScriptError
    ),
    "timeout": Timeout,
    "memory_limit": MemoryLimit,
    "cancelled": Cancelled,
    "unauthenticated": Unauthenticated,
    "quota_exceeded": QuotaExceeded,
    "queue_full": QueueFull,
    "not_found": NotFound,
}

# The status `/execute` answers a finished job with, by its code; every other failure is a 422.
_EXECUTE_STATUS = {
    "syntax_error": 400,
    "missing_main": 400,
    "timeout": 408,
    "cancelled": 409,
    "sandbox_error": 500,
    "worker_lost": 503,
}


def error_for_job(job: Job, status: int | None = None) -> RunboxError:
    """The error a finished, unsuccessful job stands for.

    `/execute` puts the job's `code` in its answer; a job fetched with `GET /jobs/<id>` has
    only `error_kind`, which is the same word. A job that failed without a kind (which the
    server should not produce) is a ServerError.
    """
    code = job.raw.get("code") or job.error_kind
    if code is None:
        code = {"timed_out": "timeout", "cancelled": "cancelled"}.get(job.status, "failed")
    cls = _CLASS_BY_CODE.get(code, ServerError)
    message = job.error or f"job {job.id} ended with status {job.status}"
    if status is None:
        status = _EXECUTE_STATUS.get(code, 422)
    return cls(message, status=status, code=code, body=job.raw, job=job)


def error_for_answer(status: int, body: Any, retry_after: float | None = None) -> RunboxError:
    """The error an unsuccessful HTTP answer stands for.

    `/execute` answers a failed job with the job itself; anything else carries the server's
    `{"error", "code", ...}`. A 4xx code this client has no class for (`already_finished`,
    `idempotency_key_reused`, `forbidden`, ...) is a plain RunboxError: the request, not the
    server, is at fault. 5xx answers and answers that are not the server's JSON (a proxy's
    error page, say) are ServerErrors.
    """
    if isinstance(body, dict) and "created_at" in body and "id" in body:
        return error_for_job(Job.from_dict(body), status)
    code: str | None = None
    message = f"HTTP {status}"
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        if isinstance(body.get("error"), str):
            message = body["error"]
    elif isinstance(body, str) and body.strip():
        message = f"HTTP {status}: {body.strip()[:500]}"
    cls = _CLASS_BY_CODE.get(code or "")
    if cls is None:
        cls = RunboxError if 400 <= status < 500 else ServerError
    return cls(message, status=status, code=code, body=body, retry_after=retry_after)
