"""Runs one submitted script inside the sandbox and reports how it went.

Cold path: nsjail starts `python3 harness.py`; the worker mounts the script at SCRIPT_PATH, gives
this process a pipe on the file descriptor named by RUNBOX_RESULT_FD, the job's CPU time limit in
RUNBOX_CPU_LIMIT_SECS and the seccomp policy in RUNBOX_SECCOMP; the variables are removed and the
policy installed before the script runs. Warm path: a template (template.py) imports this module
once and each of its children calls `enter_sandbox` before its job arrives, then `run_job` with
the script it was sent. Either way exactly one JSON record is written on the result channel,
and only by this harness once main() has returned or failed: the script's own stdout is never
parsed.

Record shapes:
  {"ok": true, "started_ns": T, "result": <main()'s return value>}
  {"ok": false, "kind": "<error kind>", "message": "...", "line": L?, "column": C?, "code": N?,
   "started_ns": T?}
T is CLOCK_MONOTONIC in nanoseconds when the script's code began to run (absent when it never
did), so the worker can tell how long the sandbox took to start.

Only what every job needs is imported up front: asyncio, inspect and traceback cost tens of
milliseconds and are imported when a script needs them (an async main, an exception).
"""

import json
import os
import resource
import sys
import time
import types

SCRIPT_PATH = "/job/script.py"
# The keyword arguments for `main` on the cold path (a warm child gets them with its job).
ARGS_PATH = "/job/args.json"
MODULE_NAME = "script"
HARNESS_FILE = os.path.abspath(__file__)

# Set just before the script's module code runs.
script_started_ns = None


def open_result_channel():
    return int(os.environ.pop("RUNBOX_RESULT_FD"))


def lower_cpu_limit(seconds):
    """Sets RLIMIT_CPU's soft limit to the job's CPU time limit, the hard one a second later.

    At the hard limit the kernel sends SIGKILL, which says nothing about why. Past the soft
    limit it sends SIGXCPU, which the worker reports as a timeout. Children inherit the limit."""
    if seconds <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or seconds + 1 < hard:
        hard = seconds + 1
    resource.setrlimit(resource.RLIMIT_CPU, (min(seconds, hard), hard))


def prepare_seccomp(policy):
    """The worker's seccomp programs (hex, comma-separated, in order) as `struct sock_fprog`s
    ready for `install_seccomp`; a warm template prepares them once for all its children."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prepared = []
    for program in policy.split(","):
        code = bytes.fromhex(program)
        buffer = ctypes.create_string_buffer(code, len(code))
        # The buffer is kept with its program: the kernel copies it only at install time.
        prepared.append((SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p)), buffer))
    return ctypes.CDLL(None, use_errno=True), prepared


def install_seccomp(prepared):
    """Installs prepared programs on this thread and every process and thread it starts.
    no_new_privs is already set (nsjail sets it, and it is inherited), which lets an
    unprivileged process install filters. A failure raises: the script never runs without
    its policy."""
    import ctypes

    libc, programs = prepared
    pr_set_seccomp, seccomp_mode_filter = 22, 2
    for fprog, _ in programs:
        if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"installing the seccomp policy failed: {os.strerror(errno)}")


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
    # The job's last word is out once its output is closed too: the worker need not wait for
    # the kernel to tear this process down (which unmaps all its memory first).
    for stream in (1, 2):
        try:
            os.close(stream)
        except OSError:
            pass
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
    import traceback

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


def run(source, args=None):
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
        # Decoded before the script runs, so nothing it does to `json` can change them.
        kwargs = json.loads(args) if args else {}
        script_started_ns = time.monotonic_ns()
        exec(code, module.__dict__)
        main = module.__dict__.get("main")
        if not callable(main) or isinstance(main, type):
            return failure(
                "missing_main",
                "script does not define a function `main` at the top level",
            )
        value = main(**kwargs)
        if isinstance(value, types.CoroutineType):
            import asyncio

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


def enter_sandbox(fd, policy):
    """The last steps before this process may run a job's code, none of which depends on the
    job: the result channel `fd` stays out of any program the script starts, and the seccomp
    `policy` (from `prepare_seccomp`) is installed. A warm child takes them before its job
    arrives."""
    os.set_inheritable(fd, False)
    install_seccomp(policy)


def run_job(fd, source, cpu_limit_secs, args=None):
    """Runs `source` in this process, already inside the job's sandbox (`enter_sandbox`), and
    reports on `fd`. `args`: the JSON text of `main`'s keyword arguments, or None."""
    lower_cpu_limit(cpu_limit_secs)
    sys.argv = [SCRIPT_PATH]
    # A pipe would make stdout block-buffered: each line goes out as it is printed, so a
    # follower of the job sees it while the job runs.
    sys.stdout.reconfigure(line_buffering=True)
    send(fd, run(source, args))


def die_with_worker(fd):
    """Cold path: dies with nsjail, which dies with the worker (its parent-death signal). nsjail
    sets that signal for this process too, but setting uids afterwards can clear it, so the
    harness sets its own. Had nsjail died before, the worker is gone as well, and with it the
    reader of the result pipe: poll reports POLLERR on a pipe nobody reads."""
    import ctypes
    import select

    pr_set_pdeathsig, sigkill = 1, 9
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
    watch = select.poll()
    watch.register(fd, 0)
    if watch.poll(0):
        os._exit(1)


def main():
    fd = open_result_channel()
    die_with_worker(fd)
    cpu_limit_secs = int(float(os.environ.pop("RUNBOX_CPU_LIMIT_SECS", "0")))
    policy = prepare_seccomp(os.environ.pop("RUNBOX_SECCOMP"))
    with open(SCRIPT_PATH, encoding="utf-8", errors="surrogateescape") as handle:
        source = handle.read()
    try:
        with open(ARGS_PATH, encoding="utf-8") as handle:
            args = handle.read()
    except FileNotFoundError:
        args = None
    enter_sandbox(fd, policy)
    run_job(fd, source, cpu_limit_secs, args)


if __name__ == "__main__":
    main()
