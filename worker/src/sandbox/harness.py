"""Runs one submitted script inside the sandbox and reports how it went.

The worker mounts the script at SCRIPT_PATH and gives this process a pipe on the file
descriptor named by RUNBOX_RESULT_FD, and the job's CPU time limit in RUNBOX_CPU_LIMIT_SECS;
both variables are removed before the script runs. Exactly one JSON record is written there, and only by
this harness once main() has returned or failed: the script's own stdout is never parsed.

Record shapes:
  {"ok": true, "started_ns": T, "result": <main()'s return value>}
  {"ok": false, "kind": "<error kind>", "message": "...", "line": L?, "column": C?, "code": N?,
   "started_ns": T?}
T is CLOCK_MONOTONIC in nanoseconds when the script's code began to run (absent when it never
did), so the worker can tell how long the sandbox took to start.
"""

import asyncio
import inspect
import json
import os
import resource
import sys
import time
import traceback
import types

SCRIPT_PATH = "/job/script.py"
MODULE_NAME = "script"
HARNESS_FILE = os.path.abspath(__file__)

# Set just before the script's module code runs.
script_started_ns = None


def open_result_channel():
    fd = int(os.environ.pop("RUNBOX_RESULT_FD"))
    # Keep the channel out of any child the script starts.
    os.set_inheritable(fd, False)
    return fd


def lower_cpu_limit():
    """Sets RLIMIT_CPU's soft limit to the job's CPU time limit.

    nsjail sets soft and hard limit alike, one second above the job's; at the hard limit the
    kernel sends SIGKILL, which says nothing about why. Past the soft limit it sends SIGXCPU,
    which the worker reports as a timeout. Children inherit the limit."""
    seconds = int(float(os.environ.pop("RUNBOX_CPU_LIMIT_SECS", "0")))
    if seconds <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or seconds < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, hard))


def send(fd, record):
    """Writes the one record (a dict, or JSON text already encoded) and ends the process."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a script may close or replace its streams
            pass
    if not isinstance(record, str):
        record = json.dumps(record, ensure_ascii=False, allow_nan=False)
    data = (record + "\n").encode("utf-8")
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)
    # os._exit: a non-daemon thread the script left behind must not keep the job alive.
    os._exit(0)


def failure(kind, message, **extra):
    record = {"ok": False, "kind": kind, "message": message}
    record.update(extra)
    if script_started_ns is not None:
        record["started_ns"] = script_started_ns
    return record


def user_traceback(exc):
    """The traceback of `exc` without the harness's own frames."""
    te = traceback.TracebackException.from_exception(exc)
    frames = list(te.stack)
    while frames and os.path.abspath(frames[0].filename) == HARNESS_FILE:
        frames.pop(0)
    te.stack = traceback.StackSummary.from_list(frames)
    return "".join(te.format())


def exit_failure(exc):
    code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        # CPython prints a non-integer exit argument to stderr and exits with 1.
        print(code, file=sys.stderr)
        status = 1
    return failure("exited", f"script called sys.exit({code!r}); main() must return a value", code=status)


def to_json_compatible(value):
    """json.dumps fallback for numpy and pandas values, which are not JSON types."""
    numpy = sys.modules.get("numpy")
    pandas = sys.modules.get("pandas")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return value.tolist()
        if isinstance(value, numpy.generic):
            return value.item()
    if pandas is not None:
        if isinstance(value, pandas.Series):
            return value.to_dict()
        if isinstance(value, pandas.DataFrame):
            return value.to_dict(orient="records")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode_result(value):
    try:
        text = json.dumps(
            value,
            ensure_ascii=False,
            allow_nan=False,
            default=to_json_compatible,
            separators=(",", ":"),
        )
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        return None, failure(
            "result_not_json",
            f"main() returned a value that is not JSON: {type(exc).__name__}: {exc}",
        )
    return text, None


def run(source):
    global script_started_ns
    try:
        code = compile(source, SCRIPT_PATH, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = exc.lineno or 1
        column = exc.offset or 1
        return failure(
            "syntax_error",
            f"{type(exc).__name__}: {exc.msg} (line {line}, column {column})",
            line=line,
            column=column,
        )
    except (ValueError, RecursionError, MemoryError) as exc:
        return failure("syntax_error", f"SyntaxError: {exc} (line 1, column 1)", line=1, column=1)

    module = types.ModuleType(MODULE_NAME)
    module.__file__ = SCRIPT_PATH
    sys.modules[MODULE_NAME] = module
    try:
        script_started_ns = time.monotonic_ns()
        exec(code, module.__dict__)
        main = module.__dict__.get("main")
        if not callable(main) or inspect.isclass(main):
            return failure(
                "missing_main",
                "script does not define a function `main` at the top level",
            )
        if inspect.iscoroutinefunction(main):
            value = asyncio.run(main())
        else:
            value = main()
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
    except SystemExit as exc:
        return exit_failure(exc)
    except BaseException as exc:  # the script's exception is the job's outcome
        return failure("exception", user_traceback(exc))

    text, problem = encode_result(value)
    if problem is not None:
        return problem
    # Spliced in as text: the value was encoded once, exactly (big integers stay exact).
    return '{"ok": true, "started_ns": ' + str(script_started_ns) + ', "result": ' + text + "}"


def main():
    fd = open_result_channel()
    lower_cpu_limit()
    sys.argv = [SCRIPT_PATH]
    with open(SCRIPT_PATH, encoding="utf-8", errors="surrogateescape") as handle:
        source = handle.read()
    send(fd, run(source))


if __name__ == "__main__":
    main()
