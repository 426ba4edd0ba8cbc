"""The worker's start-up check, run as a job in the real sandbox before any other.

It shows that the sandbox runs Python at all, and that the kernel rejects x32 system calls.
x32 calls carry x86-64's audit architecture with bit 30 set in the call number, so the
seccomp filter, which matches x86-64 numbers, lets every one of them through: on a kernel
that accepts them a script could reach each call the policy denies.
"""

import ctypes
import json
import mmap
import os
import platform
import signal

ENOSYS = 38


def x32_getpid():
    """getpid through the x32 ABI: a pid if the kernel accepts x32 calls, else -ENOSYS.

    The call is made in a child: a seccomp filter around the sandbox (a container's, say) may
    kill the process that makes it, which blocks x32 as surely as the kernel refusing it.
    """
    if platform.machine() != "x86_64":
        return -ENOSYS
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = bytes.fromhex("b827000040" "0f05" "c3")  # mov eax, 0x40000027; syscall; ret
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        os.write(write_end, str(ctypes.CFUNCTYPE(ctypes.c_long)(address)()).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS:
        return -ENOSYS
    return int(answer)


def main():
    return {"json": json.loads("[1, 2]"), "x32_getpid": x32_getpid()}
