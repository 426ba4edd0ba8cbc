"""The HTTP client: one method per route, on urllib alone."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from typing import Any, NoReturn

from ._version import __version__
from .errors import ServerError, error_for_answer, error_for_job
from .events import END_ID, Event, Output, Parser, Status, decode_event
from .job import Job

# The longest `wait` GET /jobs/<id> accepts, in seconds.
_MAX_POLL = 30.0

# Pauses, in seconds, before each reconnect of `stream` in a row that brought no event; when
# they are used up, the last failure is raised.
_RECONNECT_BACKOFF = (0.25, 0.5, 1.0)

# How much of an event stream one read takes at most; a read returns what has arrived.
_READ_SIZE = 64 * 1024


class Runbox:
    """A client for one runbox server.

    `key` is sent as `Authorization: Bearer <key>` on every request when given (the server
    requires one unless authentication is off). `timeout` bounds, in seconds, how long any one
    HTTP request may take: `/execute` holds its request open while the job runs (up to the
    job's timeout plus the server's queue grace, 90 s at most by default), so keep it above
    that. Network failures surface as urllib's `URLError` / `OSError`; every answer from the
    server that is not a success raises a `RunboxError` subclass.

    A client holds no connection or other state between calls, so one instance may be shared
    between threads.
    """

    def __init__(self, url: str, key: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def __repr__(self) -> str:
        # The key is a secret: never let it reach a log through repr().
        return f"Runbox({self.url!r}, key={'...' if self.key else None}, timeout={self.timeout})"

    def execute(
        self,
        script: str,
        *,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        memory_mb: int | None = None,
        idempotency_key: str | None = None,
        on_output: Callable[[Output], object] | None = None,
    ) -> Any:
        """Run `script` and return what its `main()` returned.

        `args` are keyword arguments for `main`; `timeout` (seconds) and `memory_mb` are the
        job's limits (server defaults when None). If the job is still queued or running when
        the server stops waiting (a 202), this follows it with `wait` until it finishes.
        Pass an `idempotency_key` to make a retried call return the same job instead of
        running the script again.

        With `on_output`, the job is submitted and followed with `stream` instead, and
        `on_output` is called with each `Output` (stdout and stderr) while the script runs.
        The outcome is the same: the result, or the same error. An exception from `on_output`
        propagates at once, and the job goes on running (`cancel` it if it is no longer
        wanted).
        """
        if on_output is not None:
            job_id = self.submit(
                script,
                args=args,
                timeout=timeout,
                memory_mb=memory_mb,
                idempotency_key=idempotency_key,
            )
            for event in self.stream(job_id):
                if isinstance(event, Output):
                    on_output(event)
                elif event.job is not None:
                    return _outcome(event.job)
            # `stream` ends only after the terminal event (or raises) when started afresh.
            raise ServerError(f"the events of job {job_id} ended before the job did")
        body = _script_body(script, args, timeout, memory_mb)
        status, answer = self._request("POST", "/execute", body, idempotency_key=idempotency_key)
        if status == 202:
            return self.wait(answer["id"])
        return answer["result"]

    def submit(
        self,
        script: str,
        *,
        args: dict[str, Any] | None = None,
        timeout: float | None = None,
        memory_mb: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue `script` without waiting for it and return the job's id (see `execute`)."""
        body = _script_body(script, args, timeout, memory_mb)
        _, answer = self._request("POST", "/jobs", body, idempotency_key=idempotency_key)
        return str(answer["id"])

    def job(self, job_id: str) -> Job:
        """The job's current state, finished or not; a failed job is returned, not raised."""
        _, answer = self._request("GET", _job_path(job_id))
        return Job.from_dict(answer)

    def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job to finish, then return its result or raise its typed error.

        Long-polls the server (up to 30 s per request), so the job's end is seen the moment
        it happens without a busy loop of requests. Raises the built-in `TimeoutError` if the job is still not
        finished after `timeout` seconds (None: wait as long as it takes); the job keeps
        running (`cancel` it if it is no longer wanted).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            poll = _MAX_POLL
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
                poll = min(poll, remaining)
            query = urllib.parse.urlencode({"wait": f"{poll:.3f}"})
            # The server holds a long poll for up to `poll` seconds before it answers.
            _, answer = self._request(
                "GET", f"{_job_path(job_id)}?{query}", http_timeout=self.timeout + poll
            )
            job = Job.from_dict(answer)
            if job.finished:
                return _outcome(job)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job and return it, now `cancelled`.

        A job that had already finished raises a `RunboxError` with code `already_finished`.
        """
        _, answer = self._request("POST", f"{_job_path(job_id)}/cancel")
        return Job.from_dict(answer)

    def stream(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """Follow the job as it happens: yield its `Status` changes and its `Output` as the
        script prints it (within about 250 ms), ending after the final `Status`, which
        carries the finished `Job` (a failed job is yielded, not raised).

        Pass the `id` of the last event already seen as `last_event_id` to continue after
        it. If the connection drops (or stalls past `timeout` seconds: the server sends a
        keep-alive every 15 s) before the end, this reconnects with `Last-Event-ID` on its
        own, a few times with a short pause, so every event is yielded exactly once; network
        failures are raised only when those reconnects bring nothing.

        Nothing is sent until the first event is asked for, so an unknown job raises
        `NotFound` from the first `next()`, not from this call. Stopping early (breaking out
        of the loop, or `close()`) closes the connection; the job is left running.
        """
        last = last_event_id
        failures = 0
        while True:
            failure: Exception | None = None
            try:
                with self._open_events(job_id, last) as answer:
                    parser = Parser(last)
                    while True:
                        data = answer.read1(_READ_SIZE)
                        for raw in parser.feed(data, final=not data):
                            last, failures = raw.id, 0
                            event = decode_event(raw)
                            if event is None:
                                continue
                            yield event
                            if isinstance(event, Status) and event.job is not None:
                                return
                        if not data:
                            break
                        # An `id:` in a block without data still moves the place to resume from.
                        last = parser.last_id
            except (OSError, http.client.HTTPException) as error:
                # A dropped connection: a reset, a read past `timeout`, a body cut short.
                # (HTTP error answers are already typed errors, which this does not catch.)
                failure = error
            if failure is None and last == END_ID:
                return  # Resumed after the terminal event: there is nothing more to send.
            if failures == len(_RECONNECT_BACKOFF):
                if failure is not None:
                    raise failure
                raise ServerError(f"the events of job {job_id} ended before the job did")
            time.sleep(_RECONNECT_BACKOFF[failures])
            failures += 1

    def validate(self, script: str, *, args: dict[str, Any] | None = None) -> str:
        """Check `script` (and that `args` fit its `main`) without running it.

        Returns how `main` is defined, `"def"` or `"async def"`; raises `ValidationError`
        exactly where `execute` would refuse the script.
        """
        _, answer = self._request("POST", "/validate", _script_body(script, args, None, None))
        return str(answer["main"])

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        http_timeout: float | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON) of a 2xx answer, raise otherwise."""
        headers = self._headers("application/json")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=http_timeout or self.timeout) as answer:
                return answer.status, _decode(answer.read())
        except urllib.error.HTTPError as error:
            _raise_for(error)

    def _open_events(self, job_id: str, last_event_id: str | None) -> http.client.HTTPResponse:
        """Open the job's event stream, continuing after `last_event_id` when given."""
        headers = self._headers("text/event-stream")
        # As EventSource does: no cache between here and the server may answer for it.
        headers["Cache-Control"] = "no-cache"
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(f"{self.url}{_job_path(job_id)}/events", None, headers)
        try:
            # `timeout` bounds each read of the socket, not the whole stream.
            answer: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            _raise_for(error)
        kind = answer.headers.get_content_type()
        if kind != "text/event-stream":
            # A proxy's page, say: not the server's stream, and nothing to resume.
            text = answer.read(64 * 1024)
            answer.close()
            raise ServerError(
                f"HTTP {answer.status}: expected an event stream, got {kind}", body=_decode(text)
            )
        return answer

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": f"runbox-client/{__version__}"}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers


def _raise_for(error: urllib.error.HTTPError) -> NoReturn:
    """Raise the typed error for an answer that is not a success."""
    # HTTPError is both the exception and the answer: its body carries the details.
    try:
        text = error.read()
    finally:
        error.close()
    raise error_for_answer(error.code, _decode(text), _retry_after(error.headers)) from None


def _script_body(
    script: str, args: dict[str, Any] | None, timeout: float | None, memory_mb: int | None
) -> dict[str, Any]:
    # Unset limits are left out, so the server's defaults (and their bounds) apply.
    body: dict[str, Any] = {"script": script}
    if args is not None:
        body["args"] = args
    if timeout is not None:
        body["timeout"] = timeout
    if memory_mb is not None:
        body["memory_mb"] = memory_mb
    return body


def _job_path(job_id: str) -> str:
    return "/jobs/" + urllib.parse.quote(job_id, safe="")


def _decode(raw: bytes) -> Any:
    """JSON when the answer is JSON (Python's json keeps integers of any size exact), else text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _retry_after(headers: Message | None) -> float | None:
    # The server sends delta-seconds; an HTTP date (which it never sends) is ignored.
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _outcome(job: Job) -> Any:
    """The result of a finished job, or its error raised."""
    if job.status == "succeeded":
        return job.result
    raise error_for_job(job)
