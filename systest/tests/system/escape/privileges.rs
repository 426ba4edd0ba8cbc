//! Escape attempts: privileges.

use super::*;

#[tokio::test]
async fn ptrace_is_denied() {
    let sandbox = sandbox().await;
    // PTRACE_TRACEME would succeed without the seccomp filter.
    let job = sandbox
        .contain(&with_syscall(r#"
            import time

            def main():
                child = os.fork()
                if child == 0:
                    time.sleep(30)
                    os._exit(0)
                seen = {"traceme": syscall(101, 0, 0, 0, 0), "attach": syscall(101, 16, child, 0, 0)}
                os.kill(child, 9)
                os.waitpid(child, 0)
                return seen
        "#))
        .await;
    assert_result(&job, &json!({"traceme": EPERM, "attach": EPERM}));
}

/// A raw system call a script attempts, by name, as Python (`syscall`, `os` and `me`, the
/// job's own pid, are in scope), and the errno it must get.
type Attempt = (&'static str, &'static str, i64);

/// Attempts every call in one job next to the honest one: each must get its errno. Arguments
/// are chosen so that without the filter each call would succeed or fail differently (EFAULT,
/// EINVAL, ENOKEY), so EPERM is the filter's answer.
async fn assert_each_gets(attempts: &[Attempt]) {
    let sandbox = sandbox().await;
    let calls: String = attempts
        .iter()
        .map(|(name, call, _)| format!("        {name:?}: {call},\n"))
        .collect();
    let script = with_syscall(&format!(
        "def main():\n    me = os.getpid()\n    return {{\n{calls}    }}\n"
    ));
    let expected: serde_json::Map<String, Value> = attempts
        .iter()
        .map(|(name, _, errno)| ((*name).to_owned(), json!(errno)))
        .collect();
    assert_result(&sandbox.contain(&script).await, &Value::Object(expected));
}

#[tokio::test]
async fn other_processes_memory_cannot_be_reached() {
    // Without the filter, process_vm_readv and kcmp on itself would succeed.
    assert_each_gets(&[
        ("process_vm_readv", "syscall(310, me, 0, 0, 0, 0, 0)", EPERM),
        (
            "process_vm_writev",
            "syscall(311, me, 0, 0, 0, 0, 0)",
            EPERM,
        ),
        ("kcmp", "syscall(312, me, me, 0, 0, 0)", EPERM),
        ("pidfd_getfd", "syscall(438, 0, 0, 0)", EPERM),
    ])
    .await;
}

#[tokio::test]
async fn mounting_is_denied() {
    assert_each_gets(&[
        (
            "mount_tmpfs",
            r#"syscall(165, b"none", b"/tmp", b"tmpfs", 0, 0)"#,
            EPERM,
        ),
        (
            "mount_proc",
            r#"syscall(165, b"proc", b"/tmp", b"proc", 0, 0)"#,
            EPERM,
        ),
        (
            "remount_usr_rw",
            r#"syscall(165, b"none", b"/usr", 0, 0x20 | 0x1000, 0)"#,
            EPERM,
        ),
        ("umount2", r#"syscall(166, b"/tmp", 2)"#, EPERM),
        ("fsopen", r#"syscall(430, b"tmpfs", 0)"#, EPERM),
        ("open_tree", r#"syscall(428, -100, b"/usr", 1)"#, EPERM),
    ])
    .await;
}

#[tokio::test]
async fn unshare_and_setns_are_denied() {
    // An unprivileged process may normally create a user namespace; setns(0, 0) would be
    // EINVAL without the filter.
    assert_each_gets(&[
        ("unshare_user", "syscall(272, 0x10000000)", EPERM),
        ("unshare_mount", "syscall(272, 0x00020000)", EPERM),
        ("unshare_net", "syscall(272, 0x40000000)", EPERM),
        ("setns", "syscall(308, 0, 0)", EPERM),
    ])
    .await;
}

#[tokio::test]
async fn clone_into_new_namespaces_is_denied() {
    let sandbox = sandbox().await;
    // clone with a NULL stack behaves like fork; a child that got through leaves at once.
    let job = sandbox
        .contain(&with_syscall(r#"
            def main():
                seen = {}
                for name, flags in [("user", 0x10000000), ("pid", 0x20000000), ("net", 0x40000000)]:
                    result = libc.syscall(ctypes.c_long(56), ctypes.c_long(flags | 17), ctypes.c_long(0),
                                          ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
                    if result == 0:
                        os._exit(0)
                    seen[name] = ctypes.get_errno() if result == -1 else 0
                seen["clone3"] = syscall(435, 0, 0)
                return seen
        "#))
        .await;
    assert_result(
        &job,
        &json!({"user": EPERM, "pid": EPERM, "net": EPERM, "clone3": ENOSYS}),
    );
}

#[tokio::test]
async fn setuid_to_root_is_impossible() {
    let sandbox = sandbox().await;
    // Cold, uid and gid 0 have no mapping in the jail's user namespace (EINVAL); warm, they
    // map to the template's own unprivileged outside uid, and the job lacks CAP_SETUID and
    // CAP_SETGID (EPERM).
    let refused = if crate::app::warm_sandboxes() {
        EPERM
    } else {
        EINVAL
    };
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                seen = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups()}
                for name, call in [("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)),
                                   ("setresuid", lambda: os.setresuid(0, 0, 0)),
                                   ("setgroups", lambda: os.setgroups([0]))]:
                    try:
                        call()
                        seen[name] = 0
                    except OSError as e:
                        seen[name] = e.errno
                return seen
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "uid": 1000, "euid": 1000, "gid": 1000, "groups": [],
            "setuid": refused, "setgid": refused, "setresuid": refused, "setgroups": EPERM,
        }),
    );
}

#[tokio::test]
async fn the_jail_holds_no_capabilities_and_cannot_gain_any() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import ctypes

            class Header(ctypes.Structure):
                _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

            class Data(ctypes.Structure):
                _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                            ("inheritable", ctypes.c_uint32)]

            def main():
                libc = ctypes.CDLL(None, use_errno=True)
                header = Header(0x20080522, 0)
                data = (Data * 2)()
                assert libc.capget(ctypes.byref(header), data) == 0
                return {
                    "effective": data[0].effective | data[1].effective,
                    "permitted": data[0].permitted | data[1].permitted,
                    "inheritable": data[0].inheritable | data[1].inheritable,
                    "bounding": [cap for cap in range(64) if libc.prctl(23, cap, 0, 0, 0) == 1],
                    "no_new_privs": libc.prctl(39, 0, 0, 0, 0),
                }
        "#))
        .await;
    assert_result(
        &job,
        &json!({"effective": 0, "permitted": 0, "inheritable": 0, "bounding": [], "no_new_privs": 1}),
    );
}

#[tokio::test]
async fn chroot_escapes_fail_at_the_first_step() {
    let sandbox = sandbox().await;
    // The classic escape chroots into a subdirectory and climbs out with "..": the chroot
    // is refused, and climbing from the jail's root stays at the jail's root.
    let job = sandbox
        .contain(&with_syscall(r#"
            def main():
                os.mkdir("/tmp/inner")
                seen = {"chroot": syscall(161, b"/tmp/inner"), "pivot_root": syscall(155, b"/tmp", b"/tmp/inner")}
                try:
                    os.chroot("/tmp/inner")
                except OSError as e:
                    seen["os_chroot"] = e.errno
                for _ in range(64):
                    os.chdir("..")
                seen["top"] = sorted(os.listdir("."))
                return seen
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "chroot": EPERM, "pivot_root": EPERM, "os_chroot": EPERM,
            "top": ["dev", "job", "lib64", "opt", "tmp", "usr"],
        }),
    );
}

#[tokio::test]
async fn kernel_attack_surface_syscalls_fail_with_eperm() {
    // Without the filter: keyctl and add_key succeed, request_key is ENOKEY, perf_event_open
    // and io_uring_setup with a NULL argument are EFAULT.
    assert_each_gets(&[
        ("keyctl", "syscall(250, 0, -3, 0)", EPERM),
        (
            "add_key",
            r#"syscall(248, b"user", b"escape", b"x", 1, -2)"#,
            EPERM,
        ),
        (
            "request_key",
            r#"syscall(249, b"user", b"escape", 0, 0)"#,
            EPERM,
        ),
        ("bpf", "syscall(321, 5, 0, 0)", EPERM),
        ("perf_event_open", "syscall(298, 0, 0, -1, -1, 0)", EPERM),
        ("userfaultfd", "syscall(323, 0)", EPERM),
        ("io_uring_setup", "syscall(425, 1, 0)", EPERM),
    ])
    .await;
}

#[tokio::test]
async fn host_wide_syscalls_fail_with_eperm() {
    assert_each_gets(&[
        ("kexec_load", "syscall(246, 0, 0, 0, 0)", EPERM),
        ("init_module", r#"syscall(175, 0, 0, b"")"#, EPERM),
        ("finit_module", r#"syscall(313, 0, b"", 0)"#, EPERM),
        ("delete_module", r#"syscall(176, b"ext4", 0)"#, EPERM),
        (
            "reboot",
            "syscall(169, 0xfee1dead, 672274793, 0x4321fedc, 0)",
            EPERM,
        ),
        ("swapon", r#"syscall(167, b"/tmp/swap", 0)"#, EPERM),
        ("acct", r#"syscall(163, b"/tmp/acct")"#, EPERM),
        ("syslog", "syscall(103, 3, 0, 0)", EPERM),
        ("settimeofday", "syscall(164, 0, 0)", EPERM),
        ("iopl", "syscall(172, 3)", EPERM),
    ])
    .await;
}

#[tokio::test]
async fn the_hostname_is_the_jails_and_cannot_be_changed() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&with_syscall(r#"
            import socket

            def main():
                return {"hostname": socket.gethostname(), "sethostname": syscall(170, b"escaped", 7)}
        "#))
        .await;
    assert_result(&job, &json!({"hostname": "sandbox", "sethostname": EPERM}));
}
