"""A warm template: imports the interpreter's heavy modules once, then forks one single-use
sandbox per job. It runs inside its own nsjail (no network, read-only root, no /proc) as root of
that jail's user namespace, which maps only root (to an unprivileged outside uid of the
template's) and uid 1000 (to the slot's job uid).

Invariants, in the order a child goes through them; each holds before any of the script's code
runs:
  1. Fresh namespaces. The template moves itself into fresh mount, network, IPC and UTS
     namespaces and points its next child at a fresh pid namespace, so the child is pid 1 of
     its own and when it exits the kernel kills whatever it left behind. Right after each fork
     the template moves on into the next set: it never shares a namespace with a job.
  2. Fresh files. /tmp (the only writable place) and /job (the script and harness) are new
     tmpfs instances per child; the working directory is the new /tmp. /job is mounted
     read-only before the child reports ready; the script is written into it afterwards
     through a file opened on a second, detached mount of it that only the harness holds.
  3. Its own descriptors only: stdin (the job's script), stdout, stderr and the result pipe,
     all made by the worker for this job; every other descriptor is closed.
  4. Its own cgroup: the child writes itself into the job's cgroup (descriptors the worker
     opened), then unshares the cgroup namespace, so limits and counters are the job's alone.
     Pages it shares with the template and never writes stay charged to the template.
  5. Fresh randomness: `random` reseeds itself at fork; numpy's global RNG is reseeded by
     each child (after the fork, before it reports ready: the reseed takes ~1 ms).
     The str hash seed is the template's, shared by its children: the worker replaces
     templates after a number of jobs and an age, which also renews the memory layout.
  6. The job's seccomp policy on top of the template's.
  7. The job's uid 1000 and no capabilities: the template emptied the bounding and ambient
     sets for good; the child sets uid and gid, then clears the rest, so capget shows
     nothing; no_new_privs holds from nsjail.
Steps 1-6 are taken before the child reports ready, off the job's path; a waiting child
drops to the job's uid only once its job has arrived, so that no process of a slot's job uid
exists but the job's own.
A job's state dies with its process: the template's memory is never written by a child.

Protocol with the worker, on the SOCK_SEQPACKET socket at RUNBOX_CONTROL_FD:
  template -> worker   b"ready" once imports are done
  worker -> template   b"spawn" with descriptors [stdin, stdout, stderr, result, status,
                       cgroup.procs...] (SCM_RIGHTS)
The template answers each spawn on the status pipe: the child writes b"R\\n" when it is ready
for its script (or b"E <reason>\\n" and exits), and after the child has ended the template
writes b"exit <code>\\n" or b"signal <number>\\n". The worker writes the job on stdin: a JSON
header line ({"cpu_limit_secs": N}) and the script, then closes it. The template exits when the
control socket closes.
"""

import ctypes
import fcntl
import gc
import importlib.util
import json
import os
import select
import socket
import struct
import sys

# ----- system calls Python 3.11 has no function for (all ctypes use is here) -----

LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_GET_SECCOMP, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 21, 24, 47, 4
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags):
    check(LIBC.unshare(flags), "unshare")


def setns(fd, flags):
    check(LIBC.setns(fd, flags), "setns")


def mount(source, target, fstype, flags, options):
    data = options.encode() if options is not None else None
    fs = fstype.encode() if fstype is not None else None
    check(LIBC.mount(source.encode(), target.encode(), fs, flags, data), f"mount {target}")


def umount(target):
    check(LIBC.umount2(target.encode(), MNT_DETACH), f"umount {target}")


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def empty_bounding_and_ambient_sets():
    """Done once by the template, which never executes a program: its own effective
    capabilities stay, and no child can ever gain one back (the bounding set only shrinks)."""
    cap = 0
    while LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    check(LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient caps")


# Made once in the template: a child that made them would copy the template's pages it
# touched doing so, on its job's path.
CAPSET = LIBC.capset
NO_CAPABILITIES = (ctypes.byref(CapHeader(0x20080522, 0)), (CapData * 2)())


def drop_privileges(uid):
    """Becomes `uid` with no capability in any set, for good (the bounding and ambient sets
    are empty already)."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    check(CAPSET(*NO_CAPABILITIES), "capset")


def loopback_up():
    """The fresh network namespace's lo starts down; up, it answers on 127.0.0.1 like the
    cold jail's (nsjail brings it up there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


# ----- the template -----

CONTROL_FD = int(os.environ.pop("RUNBOX_CONTROL_FD"))
PRELOAD = [m for m in os.environ.pop("RUNBOX_PRELOAD", "").split(",") if m]
TEMPLATE_POLICY = os.environ.pop("RUNBOX_SECCOMP_TEMPLATE")
JOB_POLICY_TEXT = os.environ.pop("RUNBOX_SECCOMP")
JOB_UID = int(os.environ.pop("RUNBOX_JOB_UID"))
TMP_OPTIONS = "size=64m,nr_inodes=4096,mode=1777"
JOB_DIR_OPTIONS = "size=4m,nr_inodes=16,mode=0755"
# Where a child mounts /job a second time, for a moment, to open the script file writable.
JOB_DIR_WRITABLE = "/tmp/.runbox-job"
RESULT_FD = 3
STATUS_FD = 4
FIRST_CGROUP_FD = 5

with open("/job/harness.py", encoding="utf-8") as handle:
    HARNESS_SOURCE = handle.read()
spec = importlib.util.spec_from_file_location("harness", "/job/harness.py")
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)
JOB_POLICY = harness.prepare_seccomp(JOB_POLICY_TEXT)


def preload():
    """Imports what jobs will use, and touches what those modules load lazily, so no child
    pays for it (numpy's random module, pandas' reductions)."""
    for name in PRELOAD:
        __import__(name)
    if "pandas" in sys.modules:
        pandas = sys.modules["pandas"]
        frame = pandas.DataFrame({"a": [1, 2], "b": [3.0, 4.0]})
        frame.sum().sum()
        frame.describe()
        frame.to_dict(orient="records")
    if "numpy" in sys.modules:
        import numpy.random  # noqa: F401


def fresh_namespaces(self_pidfd):
    """Moves the template into new namespaces, with new /tmp and /job, for its next child."""
    # unshare(CLONE_NEWPID) only works while children still go to our own pid namespace:
    # point them back at it, then at a new one.
    setns(self_pidfd, CLONE_NEWPID)
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID)
    for target, options in (("/tmp", TMP_OPTIONS), ("/job", JOB_DIR_OPTIONS)):
        umount(target)  # the previous child's instance (or the jail's own, the first time)
        mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)
    write_job_file("harness.py", HARNESS_SOURCE)
    os.chdir("/tmp")
    loopback_up()


def write_job_file(name, text):
    path = f"/job/{name}"
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(text)
    os.chmod(path, 0o644)


def read_job():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    header, _, script = b"".join(chunks).partition(b"\n")
    return json.loads(header), script


def open_script_file():
    """Creates /job/script.py and returns it open for writing, then makes /job read-only.

    The file is opened through a bind mount of /job that is detached at once: the open file
    keeps that mount alive, unreachable by any path, and /job's own mount has no writer left,
    so it can be remounted read-only before the script is known (and before privileges go)."""
    os.mkdir(JOB_DIR_WRITABLE, 0o700)
    mount("/job", JOB_DIR_WRITABLE, None, MS_BIND, None)
    fd = os.open(f"{JOB_DIR_WRITABLE}/script.py", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC)
    os.fchmod(fd, 0o644)
    umount(JOB_DIR_WRITABLE)
    os.rmdir(JOB_DIR_WRITABLE)
    mount("none", "/job", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    return fd


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def child(cgroup_fds):
    """Becomes the job's sandbox (invariants 3-7), waits for the script and runs it."""
    try:
        for fd in cgroup_fds:
            os.write(fd, b"0")
            os.close(fd)
        unshare(CLONE_NEWCGROUP)
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        script_file = open_script_file()
        harness.enter_sandbox(RESULT_FD, JOB_POLICY)
        os.write(STATUS_FD, b"R\n")
    except OSError as error:
        os.write(STATUS_FD, f"E {error}\n".encode())
        os._exit(1)
    os.close(STATUS_FD)
    header, script = read_job()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    write_all(script_file, script)
    os.close(script_file)
    # Only now: a waiting child is no process of its slot's job uid.
    drop_privileges(JOB_UID)
    source = script.decode("utf-8", errors="surrogateescape")
    harness.run_job(RESULT_FD, source, int(header["cpu_limit_secs"]), header.get("args"))


def spawn(fds, self_pidfd):
    """Forks the next child onto `fds` (stdin, stdout, stderr, result, status, cgroup.procs
    descriptors); returns its pid, pidfd and the status descriptor the template keeps."""
    status = fds[4]
    pid = os.fork()
    if pid == 0:
        try:
            # Out of the way first, so no target number overwrites a descriptor still to move.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]
            for target, fd in enumerate(high):
                os.dup2(fd, target)
            os.closerange(len(fds), os.sysconf("SC_OPEN_MAX"))
            child(list(range(FIRST_CGROUP_FD, len(fds))))
        except BaseException as error:  # never return into the template's loop
            try:
                os.write(2, f"sandbox set-up failed: {error}\n".encode())
                os.write(STATUS_FD, f"E {error}\n".encode())
            finally:
                os._exit(1)
    for fd in fds:
        if fd != status:
            os.close(fd)
    pidfd = os.pidfd_open(pid)
    # Out of the child's namespaces at once, into the next child's.
    fresh_namespaces(self_pidfd)
    return pid, pidfd, status


def report(pid, status_fd):
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        line = f"signal {os.WTERMSIG(wait_status)}\n"
    else:
        line = f"exit {os.waitstatus_to_exitcode(wait_status)}\n"
    try:
        os.write(status_fd, line.encode())
    except OSError:
        pass  # the worker gave up on this job already
    os.close(status_fd)


def serve():
    control = socket.socket(fileno=CONTROL_FD)
    self_pidfd = os.pidfd_open(os.getpid())
    # Private: what the template mounts for one child never propagates into another's view.
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    harness.install_seccomp(harness.prepare_seccomp(TEMPLATE_POLICY))
    empty_bounding_and_ambient_sets()
    preload()
    import threading

    if threading.active_count() != 1:
        raise SystemExit("template: a preloaded module started a thread; children would inherit it")
    gc.collect()
    # Keeps the imported objects out of every collection, so children do not write (and copy)
    # the template's pages just by collecting.
    gc.freeze()
    fresh_namespaces(self_pidfd)
    control.sendall(b"ready")
    children = {}  # pidfd -> (pid, status fd)
    while True:
        readable, _, _ = select.select([control, *children], [], [])
        for pidfd in [fd for fd in readable if fd in children]:
            pid, status_fd = children.pop(pidfd)
            report(pid, status_fd)
            os.close(pidfd)
        if control in readable:
            message, fds, _, _ = socket.recv_fds(control, 64, 16)
            if not message:
                return  # the worker is gone or retired us: exiting ends every child too
            if message != b"spawn" or len(fds) < FIRST_CGROUP_FD:
                for fd in fds:
                    os.close(fd)
                continue
            pid, pidfd, status_fd = spawn(fds, self_pidfd)
            children[pidfd] = (pid, status_fd)


serve()
