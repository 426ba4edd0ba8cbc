"""Tests of the runbox client.

`LiveServerTest` runs against the server `RUNBOX_URL` names (with the API key `RUNBOX_KEY`, if
set), real sandboxes included; it is skipped without `RUNBOX_URL`. `FakeServerTest` covers the
answers a live server gives only under load or failure (202, 429, 5xx) with a scripted local
HTTP server, so it always runs.
"""

from __future__ import annotations

import doctest
import json
import os
import threading
import time
import unittest
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import runbox
from runbox import Event, Output, Runbox, Status

URL = os.environ.get("RUNBOX_URL")
KEY = os.environ.get("RUNBOX_KEY")
README = Path(__file__).resolve().parent.parent / "README.md"

# How long a test waits for a job it submitted before it gives up.
WAIT = 60.0
SLEEPER = "import time\n\ndef main():\n    time.sleep(30)\n"
# Prints a line every 200 ms for 1.2 s.
TICKER = (
    "import time\n\ndef main():\n    for i in range(6):\n        print(f'line {i}')\n"
    "        time.sleep(0.2)\n    return 'ticked'\n"
)
TICKS = "".join(f"line {i}\n" for i in range(6))
# The id of the terminal event, past every other.
END_ID = str(2**64 - 1)


def printed(events: list[Event], stream: str = "stdout") -> str:
    """What the Output events carried for `stream`, joined: chunking is the server's choice."""
    return "".join(e.text for e in events if isinstance(e, Output) and e.stream == stream)


@unittest.skipUnless(URL, "set RUNBOX_URL (and RUNBOX_KEY) to the server to test against")
class LiveServerTest(unittest.TestCase):
    client: ClassVar[Runbox]

    @classmethod
    def setUpClass(cls) -> None:
        assert URL is not None
        cls.client = Runbox(URL, key=KEY)
        # Fail at once, with one clear error, when no worker runs jobs: each test below would
        # otherwise wait for its jobs far longer (/execute alone holds on for the job's
        # timeout plus the server's grace before it answers 202).
        job_id = cls.client.submit("def main():\n    return 'ready'\n")
        try:
            cls.client.wait(job_id, timeout=WAIT)
        except TimeoutError:
            cls.client.cancel(job_id)
            raise AssertionError(f"no worker ran a trivial job within {WAIT} s") from None

    def test_execute_returns_what_main_returned(self) -> None:
        script = (
            "def main():\n    print('hi')\n    return {'answer': 42, 'ok': True, 'none': None}\n"
        )
        self.assertEqual(self.client.execute(script), {"answer": 42, "ok": True, "none": None})

    def test_async_main(self) -> None:
        script = (
            "import asyncio\n\nasync def main():\n    await asyncio.sleep(0)\n    return 'async'\n"
        )
        self.assertEqual(self.client.execute(script), "async")

    def test_args_round_trip_exactly(self) -> None:
        args = {
            "n": 2**100 + 1,
            "text": 'ünïcødé ✓ 🐍 \u0000 "quoted"',
            "nested": {"list": [-(2**64), 1.5, None, True], "empty": {}},
        }
        script = (
            "def main(n, text, nested):\n"
            "    return {'n': n, 'double': n * 2, 'text': text, 'nested': nested}\n"
        )
        result = self.client.execute(script, args=args)
        self.assertEqual(result, {**args, "double": 2 * (2**100 + 1)})
        job_id = self.client.submit(script, args=args)
        self.client.wait(job_id, timeout=WAIT)
        self.assertEqual(self.client.job(job_id).args, args)

    def test_syntax_error_has_line_and_column(self) -> None:
        with self.assertRaises(runbox.ValidationError) as caught:
            self.client.execute("x = 1\ndef main(:\n    pass\n")
        error = caught.exception
        self.assertEqual((error.status, error.code), (400, "syntax_error"))
        self.assertEqual((error.line, error.column), (2, 10))
        self.assertIsNone(error.field)
        self.assertIsNone(error.job)
        self.assertTrue(str(error).startswith("SyntaxError:"), str(error))

    def test_syntax_error_found_in_the_sandbox_fails_the_job(self) -> None:
        # The API's parser accepts this; only compile() in the sandbox refuses it.
        script = "return 5\ndef main():\n    return 1\n"
        with self.assertRaises(runbox.ValidationError) as caught:
            self.client.execute(script)
        error = caught.exception
        self.assertEqual(
            (error.status, error.code, error.line, error.column), (400, "syntax_error", 1, 1)
        )
        assert error.job is not None
        self.assertEqual(error.job.status, "failed")
        with self.assertRaises(runbox.ValidationError) as waited:
            self.client.wait(self.client.submit(script), timeout=WAIT)
        self.assertEqual((waited.exception.status, waited.exception.line), (400, 1))

    def test_missing_main(self) -> None:
        with self.assertRaises(runbox.ValidationError) as caught:
            self.client.execute("def helper():\n    return 1\n")
        self.assertEqual(caught.exception.code, "missing_main")
        self.assertIsNone(caught.exception.line)

    def test_args_that_do_not_fit_main_are_main_signature(self) -> None:
        with self.assertRaises(runbox.ValidationError) as caught:
            self.client.execute("def main(n=1):\n    return n\n", args={"count": 2})
        self.assertEqual(caught.exception.code, "main_signature")
        self.assertIn("count", str(caught.exception))

    def test_out_of_range_limit_names_its_field(self) -> None:
        with self.assertRaises(runbox.ValidationError) as caught:
            self.client.execute("def main():\n    return 1\n", timeout=1000)
        error = caught.exception
        self.assertEqual((error.code, error.field), ("invalid_request", "timeout"))

    def test_exception_carries_traceback_and_output(self) -> None:
        script = (
            "import sys\n\ndef main():\n    print('before')\n    print('warn', file=sys.stderr)\n"
            "    raise ValueError('boom')\n"
        )
        with self.assertRaises(runbox.ScriptError) as caught:
            self.client.execute(script)
        error = caught.exception
        self.assertEqual((error.status, error.code), (422, "exception"))
        assert error.traceback is not None and error.job is not None
        self.assertIn("Traceback (most recent call last)", error.traceback)
        self.assertIn("ValueError: boom", error.traceback)
        self.assertEqual(str(error), error.traceback)
        self.assertEqual((error.stdout, error.stderr), ("before\n", "warn\n"))
        self.assertEqual((error.job.status, error.job.error_kind), ("failed", "exception"))

    def test_result_that_is_not_json(self) -> None:
        with self.assertRaises(runbox.ScriptError) as caught:
            self.client.execute("def main():\n    return {1, 2}\n")
        self.assertEqual(caught.exception.code, "result_not_json")
        self.assertIsNone(caught.exception.traceback)

    def test_timeout(self) -> None:
        script = "import time\n\ndef main():\n    print('started')\n    time.sleep(30)\n"
        with self.assertRaises(runbox.Timeout) as caught:
            self.client.execute(script, timeout=1)
        error = caught.exception
        self.assertEqual((error.status, error.code), (408, "timeout"))
        assert error.job is not None
        self.assertEqual(error.job.status, "timed_out")
        self.assertEqual(error.stdout, "started\n")

    def test_memory_limit(self) -> None:
        script = "def main():\n    data = bytearray(200 * 1024 * 1024)\n    return len(data)\n"
        with self.assertRaises(runbox.MemoryLimit) as caught:
            self.client.execute(script, memory_mb=64)
        self.assertEqual(caught.exception.code, "memory_limit")
        assert caught.exception.job is not None
        self.assertEqual(caught.exception.job.memory_mb, 64)

    def test_submit_then_wait_then_job(self) -> None:
        job_id = self.client.submit("def main():\n    print('out')\n    return 2**64\n", timeout=5)
        uuid.UUID(job_id)
        self.assertEqual(self.client.wait(job_id, timeout=WAIT), 2**64)
        job = self.client.job(job_id)
        self.assertEqual(job.id, job_id)
        self.assertEqual((job.status, job.result, job.stdout), ("succeeded", 2**64, "out\n"))
        self.assertTrue(job.finished)
        self.assertIsNone(job.error)
        self.assertEqual((job.timeout, job.attempt), (5.0, 1))
        assert job.created_at and job.started_at and job.finished_at
        self.assertIsInstance(job.created_at, datetime)
        self.assertTrue(job.created_at <= job.started_at <= job.finished_at)
        self.assertEqual(job.raw["id"], job_id)

    def test_wait_raises_what_execute_raises(self) -> None:
        job_id = self.client.submit("def main():\n    raise KeyError('missing')\n")
        with self.assertRaises(runbox.ScriptError) as caught:
            self.client.wait(job_id, timeout=WAIT)
        self.assertEqual((caught.exception.status, caught.exception.code), (422, "exception"))
        self.assertIn("KeyError: 'missing'", caught.exception.traceback or "")

    def test_wait_gives_up_after_its_timeout(self) -> None:
        job_id = self.client.submit(SLEEPER)
        try:
            with self.assertRaises(TimeoutError) as caught:
                self.client.wait(job_id, timeout=0.5)
            self.assertNotIsInstance(caught.exception, runbox.RunboxError)
            self.assertFalse(self.client.job(job_id).finished)
        finally:
            self.client.cancel(job_id)

    def test_cancel_then_wait_raises_cancelled(self) -> None:
        job_id = self.client.submit(SLEEPER)
        job = self.client.cancel(job_id)
        self.assertEqual((job.id, job.status, job.error_kind), (job_id, "cancelled", "cancelled"))
        with self.assertRaises(runbox.Cancelled) as caught:
            self.client.wait(job_id, timeout=WAIT)
        self.assertEqual((caught.exception.status, caught.exception.code), (409, "cancelled"))
        # Cancelling it again is refused, and that refusal is not itself a cancellation.
        with self.assertRaises(runbox.RunboxError) as again:
            self.client.cancel(job_id)
        self.assertNotIsInstance(again.exception, runbox.Cancelled)
        self.assertEqual((again.exception.status, again.exception.code), (409, "already_finished"))

    def test_idempotency_key_returns_the_same_job(self) -> None:
        key = str(uuid.uuid4())
        script = "def main():\n    return 'once'\n"
        first = self.client.submit(script, idempotency_key=key)
        self.assertEqual(self.client.submit(script, idempotency_key=key), first)
        self.assertEqual(self.client.execute(script, idempotency_key=key), "once")

    def test_unknown_job_is_not_found(self) -> None:
        with self.assertRaises(runbox.NotFound) as caught:
            self.client.job(str(uuid.uuid4()))
        self.assertEqual((caught.exception.status, caught.exception.code), (404, "not_found"))

    def test_stream_delivers_output_while_the_job_runs(self) -> None:
        job_id = self.client.submit(TICKER)
        arrivals: list[tuple[float, Event]] = [
            (time.monotonic(), event) for event in self.client.stream(job_id)
        ]
        events = [event for _, event in arrivals]
        statuses = [e.status for e in events if isinstance(e, Status)]
        self.assertEqual(statuses, ["queued", "running", "succeeded"])
        self.assertEqual(printed(events), TICKS)

        # The lines came as they were printed, not in one lump at the end: the first well
        # before the end (the script went on for about a second after it), and several
        # chunks ahead of the end.
        end_at, end = arrivals[-1]
        outputs = [at for at, event in arrivals if isinstance(event, Output)]
        self.assertGreaterEqual(end_at - outputs[0], 0.6, f"arrivals {arrivals}")
        self.assertGreaterEqual(sum(at < end_at - 0.15 for at in outputs), 3, f"{arrivals}")

        # The final event carries the finished job, result and all.
        assert isinstance(end, Status) and end.job is not None
        self.assertEqual((end.id, end.status), (END_ID, "succeeded"))
        self.assertEqual((end.job.id, end.job.result, end.job.stdout), (job_id, "ticked", TICKS))
        self.assertTrue(end.job.finished)
        running = events[1]
        assert isinstance(running, Status)
        self.assertEqual((running.id, running.attempt, running.job), ("1", 1, None))
        self.assertTrue(running.worker_id)
        self.assertEqual((end.attempt, end.worker_id), (1, running.worker_id))

        ids = [int(event.id) for event in events]
        self.assertEqual(ids[0], 0)
        self.assertEqual(ids, sorted(set(ids)), "ids rise, one per event")

    def test_stream_resumes_after_last_event_id_without_gaps_or_repeats(self) -> None:
        job_id = self.client.submit(TICKER)
        first: list[Event] = []
        for event in self.client.stream(job_id):
            first.append(event)
            if len(first) == 3:
                break  # queued, running, the first output: the job is still printing
        self.assertIsInstance(first[2], Output)
        rest = list(self.client.stream(job_id, last_event_id=first[2].id))
        self.assertTrue(rest and isinstance(rest[0], Output), rest)
        whole = list(self.client.stream(job_id))
        self.assertEqual(first + rest, whole)
        self.assertEqual(printed(first + rest), TICKS)
        # Resuming after the end yields nothing, and ends.
        self.assertEqual(list(self.client.stream(job_id, last_event_id=whole[-1].id)), [])

    def test_stream_of_a_failing_job_yields_it(self) -> None:
        script = (
            "import sys\n\ndef main():\n    print('out')\n    print('warn', file=sys.stderr)\n"
            "    raise ValueError('boom')\n"
        )
        events = list(self.client.stream(self.client.submit(script)))
        self.assertEqual((printed(events), printed(events, "stderr")), ("out\n", "warn\n"))
        end = events[-1]
        assert isinstance(end, Status) and end.job is not None
        self.assertEqual((end.status, end.job.error_kind), ("failed", "exception"))
        self.assertIn("ValueError: boom", end.job.error or "")

    def test_stream_errors(self) -> None:
        with self.assertRaises(runbox.NotFound) as caught:
            next(self.client.stream(str(uuid.uuid4())))
        self.assertEqual((caught.exception.status, caught.exception.code), (404, "not_found"))
        with self.assertRaises(runbox.ValidationError) as invalid:
            next(self.client.stream("not-a-job"))
        self.assertEqual(
            (invalid.exception.status, invalid.exception.code), (400, "invalid_job_id")
        )

    def test_execute_with_on_output(self) -> None:
        seen: list[tuple[float, Output]] = []
        result = self.client.execute(
            TICKER, on_output=lambda output: seen.append((time.monotonic(), output))
        )
        done = time.monotonic()
        self.assertEqual(result, "ticked")
        self.assertEqual("".join(output.text for _, output in seen), TICKS)
        self.assertGreaterEqual(done - seen[0][0], 0.6, "the output came as it was printed")
        # The same outcome, and the same error, as without on_output.
        script = "def main():\n    print('before')\n    raise KeyError('missing')\n"
        texts: list[str] = []
        with self.assertRaises(runbox.ScriptError) as caught:
            self.client.execute(script, on_output=lambda output: texts.append(output.text))
        self.assertEqual((caught.exception.status, caught.exception.code), (422, "exception"))
        self.assertEqual((caught.exception.stdout, "".join(texts)), ("before\n", "before\n"))

    def test_validate(self) -> None:
        self.assertEqual(self.client.validate("def main():\n    return 1\n"), "def")
        self.assertEqual(
            self.client.validate("async def main(n):\n    return n\n", args={"n": 1}), "async def"
        )
        with self.assertRaises(runbox.ValidationError) as caught:
            self.client.validate("def main(n):\n    return n\n")
        self.assertEqual(caught.exception.code, "main_signature")

    @unittest.skipUnless(KEY, "the server requires no key (RUNBOX_KEY unset)")
    def test_wrong_key_is_unauthenticated(self) -> None:
        assert URL is not None
        for key in ("rbx_" + "A" * 43, None):
            with self.subTest(key=key), self.assertRaises(runbox.Unauthenticated) as caught:
                Runbox(URL, key=key).execute("def main():\n    return 1\n")
            self.assertEqual(
                (caught.exception.status, caught.exception.code), (401, "unauthenticated")
            )
            with self.subTest(key=key, route="events"), self.assertRaises(runbox.Unauthenticated):
                next(Runbox(URL, key=key).stream(str(uuid.uuid4())))

    def test_readme_examples(self) -> None:
        """The README's examples run, and print what the README says they print."""
        text = README.read_text(encoding="utf-8")
        test = doctest.DocTestParser().get_doctest(text, {}, "README.md", str(README), 0)
        self.assertGreater(len(test.examples), 10)
        report: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        result = runner.run(test, out=report.append)
        self.assertEqual(result.failed, 0, "".join(report))


class FakeServerTest(unittest.TestCase):
    """Answers a live server gives only under load or failure, from a scripted server."""

    # (method, path without query) -> (status, headers, body) of the answers, given in turn
    # (the last one for every request after); bodies are sent as given.
    answers: dict[tuple[str, str], list[tuple[int, dict[str, str], str]]]
    requests: list[tuple[str, str, dict[str, str]]]

    def setUp(self) -> None:
        self.answers = {}
        self.requests = []
        test = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                test.requests.append((self.command, self.path, dict(self.headers)))
                queue = test.answers[(self.command, self.path.split("?")[0])]
                status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
                data = body.encode()
                self.send_response(status)
                for name, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.client = Runbox(f"http://127.0.0.1:{server.server_address[1]}/", key="rbx_secret")

    def answer(self, method: str, path: str, status: int, body: Any, **headers: str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.answers[(method, path)] = [(status, headers, text)]

    def answer_then(self, method: str, path: str, status: int, body: Any, **headers: str) -> None:
        """Answer with this once the answers set before for `path` have been given."""
        queue = self.answers.setdefault((method, path), [])
        self.answer(method, path, status, body, **headers)
        self.answers[(method, path)] = queue + self.answers[(method, path)]

    def header(self, index: int, name: str) -> str | None:
        """A header of the `index`th request, whatever the case of its name."""
        headers = {key.lower(): value for key, value in self.requests[index][2].items()}
        return headers.get(name.lower())

    def test_execute_follows_a_202_with_long_polls(self) -> None:
        self.answer(
            "POST", "/execute", 202, {"id": "j1", "status": "queued", "location": "/jobs/j1"}
        )
        # Raw JSON text: an integer past 2**53 must not go through a float.
        self.answer(
            "GET",
            "/jobs/j1",
            200,
            '{"id": "j1", "status": "succeeded", "created_at": "2026-01-02T03:04:05.678Z",'
            ' "result": 123456789012345678901234567890}',
        )
        result = self.client.execute("def main():\n    return 1\n", idempotency_key="k-1")
        self.assertEqual(result, 123456789012345678901234567890)
        (_, _, post), (_, get_path, _) = self.requests
        self.assertEqual(post["Authorization"], "Bearer rbx_secret")
        self.assertEqual(post["Idempotency-Key"], "k-1")
        self.assertEqual(get_path, "/jobs/j1?wait=30.000")

    def test_quota_exceeded(self) -> None:
        body = {
            "error": "timeout 20 s is past this key's limit of 10 s",
            "code": "quota_exceeded",
            "quota": "max_timeout",
            "quota_limit": 10.0,
        }
        self.answer("POST", "/jobs", 429, body, **{"Retry-After": "60"})
        with self.assertRaises(runbox.QuotaExceeded) as caught:
            self.client.submit("def main():\n    return 1\n", timeout=20)
        error = caught.exception
        self.assertEqual((error.status, error.quota, error.quota_limit), (429, "max_timeout", 10.0))
        self.assertEqual(error.retry_after, 60.0)
        self.assertEqual(str(error), body["error"])
        self.assertEqual(error.body, body)

    def test_queue_full(self) -> None:
        body = {"error": "the queue is full", "code": "queue_full", "queued": 10000, "limit": 10000}
        self.answer("POST", "/execute", 429, body, **{"Retry-After": "1"})
        with self.assertRaises(runbox.QueueFull) as caught:
            self.client.execute("def main():\n    return 1\n")
        self.assertEqual((caught.exception.code, caught.exception.retry_after), ("queue_full", 1.0))

    def test_server_errors(self) -> None:
        self.answer(
            "POST",
            "/validate",
            503,
            {"error": "the job store is unavailable", "code": "store_unavailable"},
        )
        with self.assertRaises(runbox.ServerError) as caught:
            self.client.validate("def main():\n    return 1\n")
        self.assertEqual(
            (caught.exception.status, caught.exception.code), (503, "store_unavailable")
        )
        self.assertEqual(str(caught.exception), "the job store is unavailable")

        self.answer(
            "POST", "/validate", 502, "<html>Bad Gateway</html>", **{"Content-Type": "text/html"}
        )
        with self.assertRaises(runbox.ServerError) as caught:
            self.client.validate("def main():\n    return 1\n")
        self.assertEqual((caught.exception.status, caught.exception.code), (502, None))
        self.assertEqual(caught.exception.body, "<html>Bad Gateway</html>")

    def test_stream_reconnects_where_the_connection_dropped(self) -> None:
        sse = {"Content-Type": "text/event-stream"}
        # The first connection ends inside event 3, which must then come whole, once; the
        # format's corners are in it too: a BOM, CRLF line ends, comments, split data lines.
        self.answer(
            "GET",
            "/jobs/j1/events",
            200,
            "\ufeff: keep-alive\r\n\r\n"
            'id: 0\r\nevent: status\r\ndata: {"status": "queued"}\r\n\r\n'
            'id: 1\nevent: status\ndata: {"status": "running", "attempt": 1,\n'
            'data:"worker_id": "w-1"}\n\n'
            ": keep-alive\n\n"
            'id: 2\nevent: output\ndata: {"stream": "stdout", "text": "a\\n"}\n\n'
            'id: 3\nevent: output\ndata: {"stream": "std',
            **sse,
        )
        job = {
            "id": "j1",
            "status": "succeeded",
            "created_at": "2026-01-02T03:04:05.678Z",
            "result": 123456789012345678901234567890,
            "stdout": "a\n",
            "stderr": "b\n",
            "attempt": 1,
            "worker_id": "w-1",
        }
        self.answer_then(
            "GET",
            "/jobs/j1/events",
            200,
            'id: 3\nevent: output\ndata: {"stream": "stderr", "text": "b\\n"}\n\n'
            "id: 4\nevent: progress\ndata: {}\n\n"  # a kind this client does not know
            f"id: {END_ID}\nevent: status\ndata: {json.dumps(job)}\n\n",
            **sse,
        )
        events = list(self.client.stream("j1"))
        end = runbox.Job.from_dict(job)
        self.assertEqual(
            events,
            [
                Status("0", "queued"),
                Status("1", "running", 1, "w-1"),
                Output("2", "stdout", "a\n"),
                Output("3", "stderr", "b\n"),
                Status(END_ID, "succeeded", 1, "w-1", end),
            ],
        )
        final = events[-1]
        assert isinstance(final, Status) and final.job is not None
        self.assertEqual(final.job.result, 123456789012345678901234567890)
        self.assertEqual([path for _, path, _ in self.requests], ["/jobs/j1/events"] * 2)
        self.assertEqual([self.header(i, "Last-Event-ID") for i in (0, 1)], [None, "2"])
        self.assertEqual(self.header(0, "Accept"), "text/event-stream")
        self.assertEqual(self.header(1, "Authorization"), "Bearer rbx_secret")

    def test_stream_gives_up_when_it_keeps_ending_early(self) -> None:
        sse = {"Content-Type": "text/event-stream"}
        self.answer("GET", "/jobs/j1/events", 200, ": keep-alive\n\n", **sse)
        with self.assertRaises(runbox.ServerError) as caught:
            list(self.client.stream("j1", last_event_id="5"))
        self.assertIn("ended before the job did", str(caught.exception))
        self.assertEqual(len(self.requests), 4, "the first connection and three reconnects")
        self.assertEqual({self.header(i, "Last-Event-ID") for i in range(4)}, {"5"})

    def test_stream_that_is_not_an_event_stream_is_a_server_error(self) -> None:
        self.answer(
            "GET", "/jobs/j1/events", 200, "<html>Welcome</html>", **{"Content-Type": "text/html"}
        )
        with self.assertRaises(runbox.ServerError) as caught:
            next(self.client.stream("j1"))
        self.assertEqual(caught.exception.body, "<html>Welcome</html>")
        self.assertEqual(len(self.requests), 1)

    def test_a_job_lost_by_its_workers_is_a_server_error(self) -> None:
        self.answer(
            "GET",
            "/jobs/j2",
            200,
            {
                "id": "j2",
                "status": "failed",
                "created_at": "2026-01-02T03:04:05.678Z",
                "error": "the job's workers were lost 3 times",
                "error_kind": "worker_lost",
            },
        )
        with self.assertRaises(runbox.ServerError) as caught:
            self.client.wait("j2")
        self.assertEqual((caught.exception.status, caught.exception.code), (503, "worker_lost"))


if __name__ == "__main__":
    unittest.main()
