r"""Client for runbox: run Python scripts in the server's sandboxes and get back what their
`main()` returned.

    from runbox import Runbox

    client = Runbox("http://127.0.0.1:8080", key="rbx_...")
    client.execute("def main(n):\n    return n * 2\n", args={"n": 21})  # 42

    job_id = client.submit("def main():\n    print('working')\n")
    for event in client.stream(job_id):  # Status and Output events, as they happen
        print(event)

Every failure raises a subclass of `RunboxError`, chosen by the server's stable error code.
"""

from ._version import __version__
from .client import Runbox
from .errors import (
    Cancelled,
    MemoryLimit,
    NotFound,
    QueueFull,
    QuotaExceeded,
    RunboxError,
    ScriptError,
    ServerError,
    Timeout,
    Unauthenticated,
    ValidationError,
)
from .events import Event, Output, Status
from .job import Job

__all__ = [
    "Cancelled",
    "Event",
    "Job",
    "MemoryLimit",
    "NotFound",
    "Output",
    "QueueFull",
    "QuotaExceeded",
    "Runbox",
    "RunboxError",
    "ScriptError",
    "ServerError",
    "Status",
    "Timeout",
    "Unauthenticated",
    "ValidationError",
    "__version__",
]
