"""A job's events (`GET /jobs/<id>/events`), and the Server-Sent Events parser that reads them."""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from .errors import ServerError
from .job import FINAL_STATUSES, Job

#: The id of a job's terminal event: the server numbers it past every other event.
END_ID = str(2**64 - 1)


@dataclass(frozen=True)
class Status:
    """The job changed status: `queued`, `running`, then a final one.

    `attempt` and `worker_id` say which try, on which worker, once the job runs. The final
    event (`succeeded`, `failed`, `timed_out` or `cancelled`) carries the whole `job`, as
    `Runbox.job` would return it; the others have `job` None.
    """

    #: The event's id: pass it as `last_event_id` to continue after this event.
    id: str
    status: str
    attempt: int | None = None
    worker_id: str | None = None
    job: Job | None = None


@dataclass(frozen=True)
class Output:
    """Text the script printed: `stream` is `stdout` or `stderr`.

    One event may hold several lines, or part of one: the worker ships what was printed since
    its last write (at most every 200 ms), so join the texts rather than count events.
    """

    #: The event's id: pass it as `last_event_id` to continue after this event.
    id: str
    stream: str
    text: str


#: What `Runbox.stream` yields.
Event: TypeAlias = Status | Output


class RawEvent(NamedTuple):
    """One dispatched Server-Sent Event, before its data is decoded."""

    id: str | None
    event: str
    data: str


# A line ends at CRLF, LF or CR, as the Server-Sent Events format allows.
_LINE_END = re.compile(r"\r\n|\r|\n")


class Parser:
    """An incremental parser of the `text/event-stream` format (the WHATWG HTML standard's).

    Feed it the body's bytes as they arrive, in pieces of any size (a piece may end inside a
    UTF-8 sequence, a line or an event); it returns the events completed so far. Comments
    (keep-alives) and events without data are dropped; an event cut off by the end of the
    stream is never returned, so a reconnect resumes before it.

    `last_id` is the id of the last event completed: it carries over to events without an
    `id:` line, and is what a reconnect sends as `Last-Event-ID`.
    """

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._started = False
        self._id = last_id
        self._event = ""
        self._data: list[str] = []

    def feed(self, data: bytes, *, final: bool = False) -> list[RawEvent]:
        """The events that `data` completes; `final` once the stream has ended."""
        self._text += self._decoder.decode(data, final)
        if not self._started and self._text:
            self._started = True
            self._text = self._text.removeprefix("\ufeff")
        events: list[RawEvent] = []
        start = 0
        while match := _LINE_END.search(self._text, start):
            # A CR at the end of what arrived may be the first half of a CRLF.
            if match.group() == "\r" and match.end() == len(self._text) and not final:
                break
            event = self._line(self._text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._text = self._text[start:]
        return events

    def _line(self, line: str) -> RawEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        # `retry` and unknown fields are ignored: reconnecting is the caller's business.
        return None

    def _dispatch(self) -> RawEvent | None:
        self.last_id = self._id
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return RawEvent(self._id, event, "\n".join(data))


def decode_event(raw: RawEvent) -> Event | None:
    """The typed event a raw `status` or `output` event stands for; None for other kinds,
    which a newer server may send and this client does not know."""
    if raw.event not in ("status", "output"):
        return None
    try:
        data: Any = json.loads(raw.data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ServerError(f"malformed {raw.event} event: {raw.data[:500]!r}", body=raw.data)
    event_id = raw.id or ""
    try:
        if raw.event == "output":
            return Output(id=event_id, stream=str(data["stream"]), text=str(data["text"]))
        status = str(data["status"])
        if status in FINAL_STATUSES:
            job = Job.from_dict(data)
            return Status(event_id, status, job.attempt, job.worker_id, job)
        return Status(event_id, status, data.get("attempt"), data.get("worker_id"))
    except KeyError as missing:
        raise ServerError(f"{raw.event} event without {missing}", body=data) from None
