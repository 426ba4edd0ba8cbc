//! Hostile scripts. Each attack must fail in the specific way the security model promises,
//! while an honest job runs next to it on the same worker and still succeeds, the API still
//! answers `/health`, and no process of the job's sandbox uids is left on the host.

use std::net::UdpSocket;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{repo_root, spawn_app_with, Options, TestApp};

/// The job that must keep working whatever its neighbour does.
const HONEST: &str = "import numpy as np\n\ndef main():\n    return int(np.arange(1000).sum())\n";
const HONEST_RESULT: i64 = 499_500;

// errno values the attacks report (Linux, x86_64).
const EPERM: i64 = 1;
pub(crate) const ENOENT: i64 = 2;
pub(crate) const ESRCH: i64 = 3;
const EBADF: i64 = 9;
const EAGAIN: i64 = 11;
const EACCES: i64 = 13;
const EINVAL: i64 = 22;
const EMFILE: i64 = 24;
const EFBIG: i64 = 27;
const ENOSPC: i64 = 28;
const EROFS: i64 = 30;
const ENOSYS: i64 = 38;
const EAFNOSUPPORT: i64 = 97;
const ENETUNREACH: i64 = 101;
pub(crate) const ECONNREFUSED: i64 = 111;

/// Defines `syscall(number, *args)`, which returns the errno of a raw system call (0 when it
/// succeeded), so a script can try what Python has no function for. Arguments are chosen so
/// that most calls would fail differently (EFAULT, EINVAL) or succeed if seccomp let them
/// through; EPERM is then the filter's answer, not the kernel's.
const SYSCALL: &str = r#"
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def syscall(number, *args):
    ctypes.set_errno(0)
    converted = [a if isinstance(a, bytes) else ctypes.c_long(a) for a in args]
    result = libc.syscall(ctypes.c_long(number), *converted)
    return ctypes.get_errno() if result == -1 else 0
"#;

/// Scripts are written indented along with the test; Python wants them at column 0.
pub(crate) fn py(source: &str) -> String {
    let indent = source
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut script: String = source
        .lines()
        .map(|line| line.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    script.push('\n');
    script
}

fn with_syscall(source: &str) -> String {
    format!("{}{}", py(SYSCALL), py(source))
}

/// An API and a worker of their own, with sandbox uids no other test uses, so the host-wide
/// check for surviving processes sees only this test's jobs (even when tests share a process).
pub(crate) struct Sandbox {
    pub(crate) app: TestApp,
    /// The job uids of the worker's slots (two unless the test asks otherwise); its warm
    /// templates run as the next ones.
    pub(crate) uids: Range<u32>,
}

async fn sandbox() -> Sandbox {
    sandbox_with(Vec::new()).await
}

pub(crate) async fn sandbox_with(mut worker_env: Vec<(&'static str, String)>) -> Sandbox {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Above the 200_000.. range the other tests use; 64 sandboxes per test process, each with
    // two job uids and, above them, two for its warm templates.
    let base = 1_000_000
        + (std::process::id() % 50_000) * 256
        + (NEXT.fetch_add(1, Ordering::Relaxed) % 64) * 4;
    worker_env.push(("SANDBOX_UID_BASE", base.to_string()));
    let slots = match worker_env
        .iter()
        .find(|(name, _)| *name == "WORKER_CONCURRENCY")
    {
        Some((_, slots)) => slots.parse().expect("a number of slots"),
        None => {
            worker_env.push(("WORKER_CONCURRENCY", "2".to_owned()));
            2
        }
    };
    let app = spawn_app_with(Options {
        worker_env,
        ..Options::default()
    })
    .await;
    Sandbox {
        app,
        uids: base..base + slots,
    }
}

impl Sandbox {
    /// Runs `script` with default limits next to the honest job; returns the attack's job.
    async fn contain(&self, script: &str) -> Value {
        self.contain_with(json!({ "script": script })).await
    }

    /// Runs the attack `body` next to the honest job; returns the attack's job.
    async fn contain_with(&self, body: Value) -> Value {
        let honest = json!({ "script": HONEST, "timeout": 30 });
        let (attack, honest) = self.alongside(body, honest).await;
        assert_eq!(honest["status"], "succeeded", "honest neighbour: {honest}");
        assert_eq!(
            honest["result"], HONEST_RESULT,
            "honest neighbour: {honest}"
        );
        attack
    }

    /// Runs two jobs at once (the worker has two slots), then checks that the service is up
    /// and nothing of either job is left running on the host.
    pub(crate) async fn alongside(&self, first: Value, second: Value) -> (Value, Value) {
        let ((_, first), (_, second)) =
            futures::join!(self.app.execute(first), self.app.execute(second));
        for job in [&first, &second] {
            assert!(
                !matches!(job["status"].as_str(), Some("queued" | "running") | None),
                "job did not finish: {job}"
            );
        }
        self.assert_healthy().await;
        (first, second)
    }

    pub(crate) async fn assert_healthy(&self) {
        let (status, body) = self.app.get("/health").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_owned_by(&self.uids);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sandbox processes survived their job: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Host processes whose real uid is in `uids`, as "pid name"; zombies (dead, waiting for a
/// parent to collect their status) are not counted.
pub(crate) fn processes_owned_by(uids: &Range<u32>) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        panic!("/proc is needed to look for surviving sandbox processes");
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between the listing and the read.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
        };
        let uid = field("Uid:").and_then(|uid| uid.parse::<u32>().ok());
        if uid.is_some_and(|uid| uids.contains(&uid)) && field("State:").as_deref() != Some("Z") {
            found.push(format!("{pid} {}", field("Name:").unwrap_or_default()));
        }
    }
    found
}

pub(crate) fn assert_result(job: &Value, expected: &Value) {
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(&job["result"], expected, "{job}");
}

fn assert_failure(job: &Value, kind: &str, message_part: &str) {
    assert_eq!(job["error_kind"], kind, "{job}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|error| error.contains(message_part)),
        "error should mention {message_part:?}: {job}"
    );
}

// ----- network -----

#[tokio::test]
async fn tcp_to_an_outside_address_finds_no_route() {
    let sandbox = sandbox().await;
    // A UDP connect only looks up a route and sends nothing; the TCP connect is tried only
    // when there is none, so even a broken sandbox sends nothing off the machine.
    // 192.0.2.1 is TEST-NET-1, which no network routes anyway.
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    probe.connect(("192.0.2.1", 9))
                    return {"route": True}
                except OSError as e:
                    probe_errno = e.errno
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.settimeout(3)
                try:
                    tcp.connect(("192.0.2.1", 80))
                    return {"connected": True}
                except OSError as e:
                    return {"probe": probe_errno, "tcp": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({"probe": ENETUNREACH, "tcp": ENETUNREACH}));
}

#[tokio::test]
async fn udp_to_an_outside_address_finds_no_route() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    udp.connect(("192.0.2.1", 53))
                    return {"route": True}
                except OSError as e:
                    probe_errno = e.errno
                try:
                    udp.sendto(b"escape", ("192.0.2.1", 53))
                    return {"sent": True}
                except OSError as e:
                    return {"probe": probe_errno, "sendto": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({"probe": ENETUNREACH, "sendto": ENETUNREACH}));
}

#[tokio::test]
async fn ipv6_to_an_outside_address_finds_no_route() {
    let sandbox = sandbox().await;
    // 2001:db8::/32 is the IPv6 documentation prefix.
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                try:
                    probe.connect(("2001:db8::1", 9))
                    return {"route": True}
                except OSError as e:
                    probe_errno = e.errno
                tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                tcp.settimeout(3)
                try:
                    tcp.connect(("2001:db8::1", 80))
                    return {"connected": True}
                except OSError as e:
                    return {"probe": probe_errno, "tcp": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({"probe": ENETUNREACH, "tcp": ENETUNREACH}));
}

#[tokio::test]
async fn tcp_to_the_api_port_on_localhost_is_refused() {
    let sandbox = sandbox().await;
    let port = sandbox
        .app
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("the API's port");
    // The API listens on the host's 127.0.0.1; the jail's loopback is its own.
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.settimeout(3)
                try:
                    tcp.connect(("127.0.0.1", {port}))
                    tcp.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    return {{"connected": tcp.recv(100).decode(errors="replace")}}
                except OSError as e:
                    return {{"errno": e.errno}}
        "#
        )))
        .await;
    assert_result(&job, &json!({ "errno": ECONNREFUSED }));
}

#[tokio::test]
async fn udp_to_a_host_socket_on_localhost_never_arrives() {
    let sandbox = sandbox().await;
    let host = UdpSocket::bind("127.0.0.1:0").expect("bind a host UDP socket");
    host.set_nonblocking(true).expect("non-blocking");
    let port = host.local_addr().expect("address").port();
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.settimeout(2)
                udp.connect(("127.0.0.1", {port}))
                udp.send(b"escape")
                try:
                    udp.recv(100)
                    return {{"answered": True}}
                except OSError as e:
                    # The jail's own loopback answers "port unreachable".
                    return {{"recv": e.errno}}
        "#
        )))
        .await;
    assert_result(&job, &json!({ "recv": ECONNREFUSED }));
    let mut buf = [0u8; 100];
    let received = host.recv(&mut buf);
    assert!(
        received
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the host received {received:?}"
    );
}

#[tokio::test]
async fn the_only_network_interface_is_loopback() {
    let sandbox = sandbox().await;
    // SIOCGIFCONF lists the interfaces that have an IPv4 address (netlink is refused).
    let job = sandbox
        .contain(&py(r#"
            import array
            import fcntl
            import socket
            import struct

            def main():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                buf = array.array("B", bytes(40 * 32))
                address, _ = buf.buffer_info()
                answer = fcntl.ioctl(s.fileno(), 0x8912, struct.pack("iL", len(buf), address))
                size = struct.unpack("iL", answer)[0]
                return [bytes(buf[i:i + 16]).split(b"\0")[0].decode() for i in range(0, size, 40)]
        "#))
        .await;
    assert_result(&job, &json!(["lo"]));
}

#[tokio::test]
async fn dns_lookups_fail_without_a_resolver() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                try:
                    return {"address": socket.getaddrinfo("example.com", 80)[0][4][0]}
                except socket.gaierror as e:
                    return {"gaierror": e.errno}
        "#))
        .await;
    // EAI_AGAIN: no /etc/resolv.conf, and nothing answers on the jail's own loopback.
    assert_result(&job, &json!({"gaierror": -3}));
}

#[tokio::test]
async fn sockets_of_families_other_than_unix_and_ip_are_refused() {
    let sandbox = sandbox().await;
    // Netlink would work for an unprivileged process without the seccomp filter.
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                seen = {}
                for name, family, kind in [
                    ("netlink", 16, socket.SOCK_RAW),
                    ("packet", 17, socket.SOCK_RAW),
                    ("key", 15, socket.SOCK_RAW),
                    ("alg", 38, socket.SOCK_SEQPACKET),
                    ("vsock", 40, socket.SOCK_STREAM),
                ]:
                    try:
                        socket.socket(family, kind).close()
                        seen[name] = 0
                    except OSError as e:
                        seen[name] = e.errno
                return seen
        "#))
        .await;
    let refused = EAFNOSUPPORT;
    assert_result(
        &job,
        &json!({"netlink": refused, "packet": refused, "key": refused, "alg": refused, "vsock": refused}),
    );
}

#[tokio::test]
async fn abstract_unix_sockets_of_the_host_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    let sandbox = sandbox().await;
    let name = format!("runbox-escape-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let listener = UnixListener::bind_addr(&address).expect("listen on the host");
    listener.set_nonblocking(true).expect("non-blocking");
    // Abstract unix sockets belong to a network namespace; the jail has its own.
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect("\0{name}")
                    return {{"connected": True}}
                except OSError as e:
                    return {{"errno": e.errno}}
        "#
        )))
        .await;
    assert_result(&job, &json!({ "errno": ECONNREFUSED }));
    assert!(listener.accept().is_err(), "the host accepted a connection");
}

#[tokio::test]
async fn unix_sockets_cannot_reach_or_be_created_at_host_paths() {
    use std::os::unix::net::UnixListener;

    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("host.sock");
    let _listener = UnixListener::bind(&path).expect("listen on the host");
    let path = path.display();
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                seen = {{}}
                for name, action, target in [
                    ("connect", "connect", "{path}"),
                    ("bind_in_run", "bind", "/run/escape.sock"),
                    ("bind_in_usr", "bind", "/usr/escape.sock"),
                ]:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        getattr(s, action)(target)
                        seen[name] = 0
                    except OSError as e:
                        seen[name] = e.errno
                return seen
        "#
        )))
        .await;
    assert_result(
        &job,
        &json!({"connect": ENOENT, "bind_in_run": ENOENT, "bind_in_usr": EROFS}),
    );
}

// ----- what the jail can read -----

/// A script that returns the errno of opening (or listing) each path, or 0 if it worked.
fn probe_paths(paths: &[(&str, &str)]) -> String {
    let table: Vec<String> = paths
        .iter()
        .map(|(name, path)| format!("({name:?}, {path:?})"))
        .collect();
    py(&format!(
        r#"
        import os

        def main():
            seen = {{}}
            for name, path in [{}]:
                try:
                    if os.path.isdir(path) or path.endswith("/"):
                        os.listdir(path)
                    else:
                        open(path, "rb").read(1)
                    seen[name] = 0
                except OSError as e:
                    seen[name] = e.errno
            return seen
        "#,
        table.join(", ")
    ))
}

#[tokio::test]
async fn etc_shadow_and_the_rest_of_etc_do_not_exist() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&probe_paths(&[
            ("shadow", "/etc/shadow"),
            ("passwd", "/etc/passwd"),
            ("etc", "/etc/"),
        ]))
        .await;
    assert_result(
        &job,
        &json!({"shadow": ENOENT, "passwd": ENOENT, "etc": ENOENT}),
    );
}

#[tokio::test]
async fn root_and_home_directories_do_not_exist() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&probe_paths(&[
            ("root", "/root/"),
            ("bashrc", "/root/.bashrc"),
            ("home", "/home/"),
        ]))
        .await;
    assert_result(
        &job,
        &json!({"root": ENOENT, "bashrc": ENOENT, "home": ENOENT}),
    );
}

#[tokio::test]
async fn the_jobs_database_is_not_reachable() {
    let sandbox = sandbox().await;
    let file = sandbox
        .app
        .database_url
        .strip_prefix("sqlite://")
        .expect("a SQLite URL")
        .to_owned();
    let dir = format!(
        "{}/",
        std::path::Path::new(&file)
            .parent()
            .expect("a directory")
            .display()
    );
    assert!(std::path::Path::new(&file).exists(), "{file}");
    let job = sandbox
        .contain(&probe_paths(&[("file", &file), ("dir", &dir)]))
        .await;
    assert_result(&job, &json!({"file": ENOENT, "dir": ENOENT}));
}

#[tokio::test]
async fn proc_is_absent_so_no_process_environment_can_be_read() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import glob

            def main():
                seen = {"others": glob.glob("/proc/*/environ")}
                for name, path in [("pid1", "/proc/1/environ"), ("self", "/proc/self/environ")]:
                    try:
                        open(path, "rb").read()
                        seen[name] = 0
                    except OSError as e:
                        seen[name] = e.errno
                return seen
        "#))
        .await;
    assert_result(&job, &json!({"others": [], "pid1": ENOENT, "self": ENOENT}));
}

#[tokio::test]
async fn the_worker_binary_and_the_service_config_are_not_reachable() {
    let sandbox = sandbox().await;
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_api"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let worker = bin_dir.join("worker").display().to_string();
    let api = bin_dir.join("api").display().to_string();
    let config = repo_root().join("nsjail.cfg").display().to_string();
    assert!(std::path::Path::new(&worker).exists(), "{worker}");
    let job = sandbox
        .contain(&probe_paths(&[
            ("worker", &worker),
            ("api", &api),
            ("config", &config),
            ("nsjail", "/opt/runbox/bin/nsjail"),
        ]))
        .await;
    assert_result(
        &job,
        &json!({"worker": ENOENT, "api": ENOENT, "config": ENOENT, "nsjail": ENOENT}),
    );
}

#[tokio::test]
async fn the_jail_holds_only_the_interpreter_its_libraries_and_the_job() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                return {d: sorted(os.listdir(d)) for d in ["/", "/usr", "/usr/bin", "/opt", "/opt/runbox", "/job"]}
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "/": ["dev", "job", "lib64", "opt", "tmp", "usr"],
            "/usr": ["bin", "lib", "share"],
            "/usr/bin": ["python3", "python3.11"],
            "/opt": ["runbox"],
            "/opt/runbox": ["python"],
            "/job": ["harness.py", "script.py"],
        }),
    );
}

#[tokio::test]
async fn dev_holds_only_null_zero_random_and_urandom() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import os\n\ndef main():\n    return sorted(os.listdir('/dev'))\n")
        .await;
    assert_result(&job, &json!(["null", "random", "urandom", "zero"]));
}

#[tokio::test]
async fn sysfs_and_the_cgroup_tree_are_absent() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&probe_paths(&[
            ("sys", "/sys/"),
            ("cgroup", "/sys/fs/cgroup/"),
        ]))
        .await;
    assert_result(&job, &json!({"sys": ENOENT, "cgroup": ENOENT}));
}

#[tokio::test]
async fn the_environment_carries_nothing_of_the_worker() {
    let sandbox = sandbox_with(vec![("RUNBOX_TEST_SECRET", "hunter2".to_owned())]).await;
    let job = sandbox
        .contain("import os\n\ndef main():\n    return dict(os.environ)\n")
        .await;
    assert_result(
        &job,
        &json!({
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }),
    );
}

#[tokio::test]
async fn only_stdio_and_the_result_pipe_are_inherited() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                open_fds = []
                for fd in range(1024):
                    try:
                        os.fstat(fd)
                        open_fds.append(fd)
                    except OSError:
                        pass
                return open_fds
        "#))
        .await;
    assert_result(&job, &json!([0, 1, 2, 3]));
}

// ----- what the jail can write -----

#[tokio::test]
async fn creating_files_outside_tmp_fails_on_read_only_mounts() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            def main():
                seen = {}
                for path in ["/escape", "/usr/lib/python3.11/escape.py", "/dev/escape",
                             "/opt/runbox/python/escape", "/job/escape", "/lib64/escape"]:
                    try:
                        open(path, "w").close()
                        seen[path] = 0
                    except OSError as e:
                        seen[path] = e.errno
                return seen
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "/escape": EROFS,
            "/usr/lib/python3.11/escape.py": EROFS,
            "/dev/escape": EROFS,
            "/opt/runbox/python/escape": EROFS,
            "/job/escape": EROFS,
            "/lib64/escape": EROFS,
        }),
    );
}

#[tokio::test]
async fn overwriting_the_interpreter_the_harness_or_the_script_is_denied() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            def main():
                seen = {}
                for path in ["/usr/lib/python3.11/os.py", "/job/harness.py", "/job/script.py",
                             "/usr/bin/python3.11"]:
                    try:
                        open(path, "ab").close()
                        seen[path] = 0
                    except OSError as e:
                        seen[path] = e.errno
                return seen
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "/usr/lib/python3.11/os.py": EACCES,
            "/job/harness.py": EACCES,
            "/job/script.py": EACCES,
            "/usr/bin/python3.11": EACCES,
        }),
    );
}

#[tokio::test]
async fn filling_tmp_stops_at_64_mib() {
    let sandbox = sandbox().await;
    // Files of 16 MiB stay under the 32 MiB file size limit, so only /tmp's size can stop it.
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                written = 0
                chunk = b"x" * (1 << 20)
                for i in range(100):
                    fd = os.open(f"/tmp/fill-{i}", os.O_WRONLY | os.O_CREAT, 0o600)
                    try:
                        for _ in range(16):
                            written += os.write(fd, chunk)
                    except OSError as e:
                        return {"errno": e.errno, "mib": round(written / (1 << 20))}
                    finally:
                        os.close(fd)
                return {"written_mib": written >> 20}
        "#))
        .await;
    assert_result(&job, &json!({"errno": ENOSPC, "mib": 64}));
}

#[tokio::test]
async fn a_file_cannot_grow_past_32_mib() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                fd = os.open("/tmp/big", os.O_WRONLY | os.O_CREAT, 0o600)
                chunk = b"x" * (1 << 20)
                try:
                    for _ in range(60):
                        os.write(fd, chunk)
                except OSError as e:
                    return {"errno": e.errno, "size": os.fstat(fd).st_size}
                return {"size": os.fstat(fd).st_size}
        "#))
        .await;
    assert_result(&job, &json!({"errno": EFBIG, "size": 32 << 20}));
}

#[tokio::test]
async fn tmp_holds_at_most_4095_files() {
    let sandbox = sandbox().await;
    // 4096 inodes, one of them /tmp itself: millions of empty files would cost kernel memory.
    let job = sandbox
        .contain(&py(r#"
            def main():
                count = 0
                try:
                    while count < 100000:
                        open(f"/tmp/f{count}", "w").close()
                        count += 1
                except OSError as e:
                    return {"errno": e.errno, "files": count}
                return {"files": count}
        "#))
        .await;
    assert_result(&job, &json!({"errno": ENOSPC, "files": 4095}));
}

#[tokio::test]
async fn files_written_to_tmp_cannot_be_executed() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r##"
            import os
            import subprocess
            import sys

            def main():
                path = "/tmp/tool"
                with open(path, "w") as f:
                    f.write(f"#!{sys.executable}\nprint('ran')\n")
                os.chmod(path, 0o755)
                try:
                    subprocess.run([path], check=False)
                    return {"ran": True}
                except OSError as e:
                    return {"errno": e.errno}
        "##))
        .await;
    assert_result(&job, &json!({ "errno": EACCES }));
}

#[tokio::test]
async fn device_nodes_cannot_be_created() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os
            import stat

            def main():
                try:
                    os.mknod("/tmp/mem", stat.S_IFCHR | 0o666, os.makedev(1, 1))
                    return {"created": True}
                except OSError as e:
                    return {"errno": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({ "errno": EPERM }));
}

// ----- isolation between jobs -----

#[tokio::test]
async fn a_file_left_in_tmp_is_gone_for_the_next_job() {
    let sandbox = sandbox().await;
    let first = sandbox
        .contain(&py(r#"
            def main():
                with open("/tmp/leftover", "w") as f:
                    f.write("secret of the first job")
                return "written"
        "#))
        .await;
    assert_result(&first, &json!("written"));
    let second = sandbox
        .contain("import os\n\ndef main():\n    return os.listdir('/tmp')\n")
        .await;
    assert_result(&second, &json!([]));
}

/// The neighbour writes a secret and then keeps running for `hold` seconds, reporting when.
pub(crate) fn holder(setup: &str, hold: f64) -> String {
    py(&format!(
        r#"
        import time

        def main():
            begin = time.time()
{}
            time.sleep({hold})
            return {{"begin": begin, "end": time.time()}}
        "#,
        setup
            .lines()
            .map(|line| format!("            {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

/// Asserts that the prober looked while the holder was running, so the isolation was tested
/// and not just the order of two jobs.
pub(crate) fn assert_overlapped(holder: &Value, prober: &Value) {
    assert_eq!(holder["status"], "succeeded", "{holder}");
    let begin = holder["result"]["begin"].as_f64().expect("begin");
    let end = holder["result"]["end"].as_f64().expect("end");
    let at = prober["result"]["at"].as_f64().expect("at");
    assert!(
        begin < at && at < end,
        "the jobs did not overlap: {holder} {prober}"
    );
}

#[tokio::test]
async fn concurrent_jobs_cannot_see_each_others_tmp() {
    let sandbox = sandbox().await;
    let hold = holder("open('/tmp/secret', 'w').write('of the neighbour')", 3.0);
    let probe = py(r#"
        import os
        import time

        def main():
            time.sleep(1)
            try:
                open("/tmp/secret").read()
                found = 0
            except OSError as e:
                found = e.errno
            return {"at": time.time(), "listing": os.listdir("/tmp"), "open": found}
    "#);
    let (holder, prober) = sandbox
        .alongside(json!({ "script": hold }), json!({ "script": probe }))
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["listing"], json!([]), "{prober}");
    assert_eq!(prober["result"]["open"], ENOENT, "{prober}");
}

#[tokio::test]
async fn concurrent_jobs_cannot_share_sysv_memory() {
    let sandbox = sandbox().await;
    // IPC_CREAT | 0o666 under a fixed key; the neighbour looks the key up.
    let setup = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                 assert libc.shmget(0x52554E42, 4096, 0o1666) >= 0";
    let hold = holder(setup, 3.0);
    let probe = py(r#"
        import ctypes
        import time

        def main():
            time.sleep(1)
            libc = ctypes.CDLL(None, use_errno=True)
            found = libc.shmget(0x52554E42, 0, 0)
            return {"at": time.time(), "shmget": ctypes.get_errno() if found < 0 else 0}
    "#);
    let (holder, prober) = sandbox
        .alongside(json!({ "script": hold }), json!({ "script": probe }))
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["shmget"], ENOENT, "{prober}");
}

#[tokio::test]
async fn concurrent_jobs_cannot_reach_each_others_abstract_sockets() {
    let sandbox = sandbox().await;
    let setup = "import socket\nserver = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                 server.bind('\\0runbox-neighbour')\nserver.listen(1)";
    let hold = holder(setup, 3.0);
    let probe = py(r#"
        import socket
        import time

        def main():
            time.sleep(1)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect("\0runbox-neighbour")
                found = 0
            except OSError as e:
                found = e.errno
            return {"at": time.time(), "connect": found}
    "#);
    let (holder, prober) = sandbox
        .alongside(json!({ "script": hold }), json!({ "script": probe }))
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["connect"], ECONNREFUSED, "{prober}");
}

// ----- processes -----

#[tokio::test]
async fn a_fork_bomb_is_held_to_64_tasks_per_job() {
    let sandbox = sandbox().await;
    // The script itself is one of the 64; its children wait for it to return.
    let job = sandbox
        .contain(&py(r#"
            import os
            import time

            def main():
                forks = 0
                try:
                    while forks < 1000:
                        if os.fork() == 0:
                            time.sleep(60)
                            os._exit(0)
                        forks += 1
                except OSError as e:
                    return {"forks": forks, "errno": e.errno}
                return {"forks": forks}
        "#))
        .await;
    assert_result(&job, &json!({"forks": 63, "errno": EAGAIN}));
}

#[tokio::test]
async fn a_thread_bomb_is_held_to_64_tasks_per_job() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import threading

            def main():
                stop = threading.Event()
                threads = 0
                try:
                    while threads < 1000:
                        threading.Thread(target=stop.wait, daemon=True).start()
                        threads += 1
                except RuntimeError as e:
                    return {"threads": threads, "error": str(e)}
                return {"threads": threads}
        "#))
        .await;
    assert_result(
        &job,
        &json!({"threads": 63, "error": "can't start new thread"}),
    );
}

/// CPU-bound honest work, to see whether a neighbour slows it down.
const BUSY_HONEST: &str = "def main():\n    return sum(i * i for i in range(3_000_000)) % 1000\n";

async fn busy_duration_ms(app: &TestApp) -> u64 {
    let (status, job) = app
        .execute(json!({ "script": BUSY_HONEST, "timeout": 30 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job["duration_ms"].as_u64().expect("duration_ms")
}

#[tokio::test]
async fn an_endless_fork_bomb_times_out_without_starving_its_neighbour() {
    let sandbox = sandbox().await;
    let alone = busy_duration_ms(&sandbox.app).await;
    let bomb = json!({
        "script": py(r#"
            import os

            def main():
                while True:
                    try:
                        os.fork()
                    except OSError:
                        pass
        "#),
        "timeout": 4,
    });
    let started = Instant::now();
    let (bomb, neighbour) = futures::join!(sandbox.app.execute(bomb), async {
        // Let the bomb fill its 64 tasks first.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        busy_duration_ms(&sandbox.app).await
    });
    let (_, bomb) = bomb;
    assert_failure(&bomb, "timeout", "time limit of 4 s");
    assert!(started.elapsed() < Duration::from_secs(10), "{bomb}");
    sandbox.assert_healthy().await;
    // Each slot has a CPU of its own, so the bomb's 64 busy processes share one CPU. What is
    // left is the host's noise (on a 2-vCPU VM a busy vCPU alone slows its sibling by up to
    // 2x); a neighbour starved by 64 processes would take 30 times as long.
    eprintln!("busy neighbour: {alone} ms alone, {neighbour} ms next to a fork bomb");
    assert!(
        neighbour <= alone * 3 + 1000,
        "a fork bomb slowed its neighbour from {alone} ms to {neighbour} ms"
    );
}

#[tokio::test]
async fn ignoring_sigterm_does_not_outlive_the_timeout() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain_with(json!({
            "script": py(r#"
                import signal

                def main():
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
                        signal.signal(sig, signal.SIG_IGN)
                    while True:
                        pass
            "#),
            "timeout": 1,
        }))
        .await;
    assert_failure(&job, "timeout", "time limit of 1 s");
    assert_eq!(job["status"], "timed_out", "{job}");
    assert!(
        job["duration_ms"].as_u64().is_some_and(|ms| ms < 2500),
        "{job}"
    );
}

#[tokio::test]
async fn kill_minus_one_reaches_only_the_jobs_own_processes() {
    let sandbox = sandbox().await;
    // The script is pid 1 of its namespace: kill(-1) reaches its own child and nothing else.
    let job = sandbox
        .contain(&py(r#"
            import os
            import time

            def main():
                child = os.fork()
                if child == 0:
                    time.sleep(60)
                    os._exit(0)
                os.kill(-1, 9)
                _, status = os.waitpid(child, 0)
                return {"pid": os.getpid(), "child_signal": os.WTERMSIG(status)}
        "#))
        .await;
    assert_result(&job, &json!({"pid": 1, "child_signal": 9}));
}

#[tokio::test]
async fn no_process_outside_the_job_can_be_signalled() {
    let sandbox = sandbox().await;
    let host_pid = std::process::id();
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import os

            def main():
                visible = []
                for pid in [{host_pid}] + list(range(2, 32768)):
                    try:
                        os.kill(pid, 0)
                        visible.append(pid)
                    except ProcessLookupError:
                        pass
                    except OSError as e:
                        visible.append([pid, e.errno])
                try:
                    os.kill({host_pid}, 9)
                    host = 0
                except OSError as e:
                    host = e.errno
                return {{"visible": visible, "kill_host": host}}
        "#
        )))
        .await;
    assert_result(&job, &json!({"visible": [], "kill_host": ESRCH}));
}

#[tokio::test]
async fn a_child_that_outlives_main_is_killed_with_the_job() {
    let sandbox = sandbox().await;
    // A double-forked daemon in a session of its own, deaf to the polite signals. The check
    // after every job (no process of the sandbox uids left) is what this test is about.
    let job = sandbox
        .contain(&py(r#"
            import os
            import signal
            import time

            def main():
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                            signal.signal(sig, signal.SIG_IGN)
                        time.sleep(120)
                    os._exit(0)
                time.sleep(0.3)
                return "daemon started"
        "#))
        .await;
    assert_result(&job, &json!("daemon started"));
}

#[tokio::test]
async fn open_files_are_capped_at_256_per_process() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            def main():
                files = []
                try:
                    while len(files) < 10000:
                        files.append(open("/dev/null"))
                except OSError as e:
                    return {"errno": e.errno, "highest_fd": files[-1].fileno()}
                return {"opened": len(files)}
        "#))
        .await;
    assert_result(&job, &json!({"errno": EMFILE, "highest_fd": 255}));
}

// ----- memory and output -----

#[tokio::test]
async fn allocating_4_gib_is_a_memory_limit() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain_with(json!({
            "script": "def main():\n    block = bytearray(4 << 30)\n    return len(block)\n",
            "memory_mb": 64,
            "timeout": 10,
        }))
        .await;
    assert_failure(&job, "memory_limit", "64 MiB");
    assert_eq!(job["signal"], "SIGKILL", "{job}");
}

#[tokio::test]
async fn an_mmap_bomb_is_a_memory_limit() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain_with(json!({
            "script": py(r#"
                import mmap

                def main():
                    maps = []
                    while True:
                        m = mmap.mmap(-1, 256 << 20)
                        for offset in range(0, len(m), 4096):
                            m[offset] = 1
                        maps.append(m)
            "#),
            "memory_mb": 128,
            "timeout": 10,
        }))
        .await;
    assert_failure(&job, "memory_limit", "128 MiB");
    let peak = job["peak_memory_bytes"].as_u64().expect("peak memory");
    assert!(peak <= 128 << 20, "{job}");
}

#[tokio::test]
async fn a_hundred_megabytes_of_output_are_truncated_and_the_job_succeeds() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                chunk = b"y" * (1 << 20)
                for _ in range(100):
                    os.write(1, chunk)
                    os.write(2, chunk)
                return "done"
        "#))
        .await;
    assert_result(&job, &json!("done"));
    assert_eq!(job["stdout_truncated"], true, "{job}");
    assert_eq!(job["stderr_truncated"], true, "{job}");
    assert_eq!(job["stdout"].as_str().map(str::len), Some(1 << 20));
    assert_eq!(job["stderr"].as_str().map(str::len), Some(1 << 20));
}

#[tokio::test]
async fn writing_to_a_closed_stdout_is_an_ordinary_error() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                os.close(1)
                try:
                    os.write(1, b"into the void")
                    return {"written": True}
                except OSError as e:
                    return {"errno": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({ "errno": EBADF }));
}

#[tokio::test]
async fn closing_every_output_stream_does_not_hide_the_outcome() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                os.close(1)
                os.close(2)
                raise ValueError("raised after closing stdout and stderr")
        "#))
        .await;
    assert_failure(&job, "exception", "raised after closing stdout and stderr");
}

#[tokio::test]
async fn cpu_time_and_peak_memory_are_reported_and_the_job_has_one_cpu() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                busy = sum(i * i for i in range(3_000_000)) % 1000
                return {"busy": busy, "cpus": len(os.sched_getaffinity(0))}
        "#))
        .await;
    // The job's cpuset holds one CPU; sched_setaffinity cannot leave it.
    assert_eq!(job["result"]["cpus"], 1, "{job}");
    let cpu = job["cpu_ms"].as_u64().expect("cpu_ms is measured");
    let wall = job["duration_ms"].as_u64().expect("duration_ms");
    // The job is pinned to one CPU, so it cannot use more CPU time than wall time.
    assert!(
        cpu >= 100 && cpu <= wall + 20,
        "cpu {cpu} ms, wall {wall} ms"
    );
    let peak = job["peak_memory_bytes"].as_u64().expect("peak memory");
    // Cold, the job's cgroup holds the whole interpreter; warm, only what the job itself
    // wrote (the template's pages it merely reads stay the template's).
    let floor = if crate::app::warm_sandboxes() {
        64 << 10
    } else {
        1 << 20
    };
    assert!(peak > floor && peak < 256 << 20, "{job}");
}

// ----- privileges -----

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

#[tokio::test]
async fn other_processes_memory_cannot_be_reached() {
    let sandbox = sandbox().await;
    // Without the filter, process_vm_readv and kcmp on itself would succeed.
    let job = sandbox
        .contain(&with_syscall(
            r#"
            def main():
                me = os.getpid()
                return {
                    "process_vm_readv": syscall(310, me, 0, 0, 0, 0, 0),
                    "process_vm_writev": syscall(311, me, 0, 0, 0, 0, 0),
                    "kcmp": syscall(312, me, me, 0, 0, 0),
                    "pidfd_getfd": syscall(438, 0, 0, 0),
                }
        "#,
        ))
        .await;
    assert_result(
        &job,
        &json!({"process_vm_readv": EPERM, "process_vm_writev": EPERM, "kcmp": EPERM, "pidfd_getfd": EPERM}),
    );
}

#[tokio::test]
async fn mounting_is_denied() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&with_syscall(
            r#"
            def main():
                return {
                    "mount_tmpfs": syscall(165, b"none", b"/tmp", b"tmpfs", 0, 0),
                    "mount_proc": syscall(165, b"proc", b"/tmp", b"proc", 0, 0),
                    "remount_usr_rw": syscall(165, b"none", b"/usr", 0, 0x20 | 0x1000, 0),
                    "umount2": syscall(166, b"/tmp", 2),
                    "fsopen": syscall(430, b"tmpfs", 0),
                    "open_tree": syscall(428, -100, b"/usr", 1),
                }
        "#,
        ))
        .await;
    assert_result(
        &job,
        &json!({
            "mount_tmpfs": EPERM,
            "mount_proc": EPERM,
            "remount_usr_rw": EPERM,
            "umount2": EPERM,
            "fsopen": EPERM,
            "open_tree": EPERM,
        }),
    );
}

#[tokio::test]
async fn unshare_and_setns_are_denied() {
    let sandbox = sandbox().await;
    // An unprivileged process may normally create a user namespace; setns(0, 0) would be
    // EINVAL without the filter.
    let job = sandbox
        .contain(&with_syscall(
            r#"
            def main():
                return {
                    "unshare_user": syscall(272, 0x10000000),
                    "unshare_mount": syscall(272, 0x00020000),
                    "unshare_net": syscall(272, 0x40000000),
                    "setns": syscall(308, 0, 0),
                }
        "#,
        ))
        .await;
    assert_result(
        &job,
        &json!({"unshare_user": EPERM, "unshare_mount": EPERM, "unshare_net": EPERM, "setns": EPERM}),
    );
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
    let sandbox = sandbox().await;
    // Without the filter: keyctl and add_key succeed, request_key is ENOKEY, perf_event_open
    // and io_uring_setup with a NULL argument are EFAULT.
    let job = sandbox
        .contain(&with_syscall(
            r#"
            def main():
                return {
                    "keyctl": syscall(250, 0, -3, 0),
                    "add_key": syscall(248, b"user", b"escape", b"x", 1, -2),
                    "request_key": syscall(249, b"user", b"escape", 0, 0),
                    "bpf": syscall(321, 5, 0, 0),
                    "perf_event_open": syscall(298, 0, 0, -1, -1, 0),
                    "userfaultfd": syscall(323, 0),
                    "io_uring_setup": syscall(425, 1, 0),
                }
        "#,
        ))
        .await;
    let denied = EPERM;
    assert_result(
        &job,
        &json!({
            "keyctl": denied, "add_key": denied, "request_key": denied, "bpf": denied,
            "perf_event_open": denied, "userfaultfd": denied, "io_uring_setup": denied,
        }),
    );
}

#[tokio::test]
async fn host_wide_syscalls_fail_with_eperm() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&with_syscall(
            r#"
            def main():
                return {
                    "kexec_load": syscall(246, 0, 0, 0, 0),
                    "init_module": syscall(175, 0, 0, b""),
                    "finit_module": syscall(313, 0, b"", 0),
                    "delete_module": syscall(176, b"ext4", 0),
                    "reboot": syscall(169, 0xfee1dead, 672274793, 0x4321fedc, 0),
                    "swapon": syscall(167, b"/tmp/swap", 0),
                    "acct": syscall(163, b"/tmp/acct"),
                    "syslog": syscall(103, 3, 0, 0),
                    "settimeofday": syscall(164, 0, 0),
                    "iopl": syscall(172, 3),
                }
        "#,
        ))
        .await;
    let denied = EPERM;
    assert_result(
        &job,
        &json!({
            "kexec_load": denied, "init_module": denied, "finit_module": denied,
            "delete_module": denied, "reboot": denied, "swapon": denied, "acct": denied,
            "syslog": denied, "settimeofday": denied, "iopl": denied,
        }),
    );
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

// ----- how jobs end -----

#[tokio::test]
async fn sys_exit_zero_is_not_a_success() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import sys\n\ndef main():\n    sys.exit(0)\n")
        .await;
    assert_failure(&job, "exited", "sys.exit(0)");
    assert_eq!(job["exit_code"], 0, "{job}");
}

#[tokio::test]
async fn os_exit_three_reports_exit_code_three() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import os\n\ndef main():\n    os._exit(3)\n")
        .await;
    assert_failure(&job, "exited", "exit code 3");
    assert_eq!(job["exit_code"], 3, "{job}");
}

#[tokio::test]
async fn a_bare_raise_system_exit_is_not_a_success() {
    let sandbox = sandbox().await;
    let job = sandbox.contain("def main():\n    raise SystemExit\n").await;
    assert_failure(&job, "exited", "sys.exit(None)");
    assert_eq!(job["exit_code"], 0, "{job}");
}

#[tokio::test]
async fn a_forged_result_record_cannot_claim_a_worker_verdict() {
    let sandbox = sandbox().await;
    // The result pipe is open in the script's process; it can write a record, but not one
    // that blames the sandbox or the memory limit.
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                os.write(3, b'{"ok": false, "kind": "sandbox_error", "message": "forged"}\n')
                os._exit(0)
        "#))
        .await;
    assert_failure(&job, "exited", "exit code 0");
}

#[tokio::test]
async fn a_segfault_is_reported_as_killed_by_sigsegv() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import ctypes\n\ndef main():\n    return ctypes.string_at(0)\n")
        .await;
    assert_failure(&job, "killed", "SIGSEGV");
    assert_eq!(job["signal"], "SIGSEGV", "{job}");
}

#[tokio::test]
async fn every_standard_library_extension_numpy_and_pandas_import_in_the_jail() {
    let sandbox = sandbox().await;
    // The policy binds only the libraries these need; a missing one fails an import here.
    let job = sandbox
        .contain(&py(r#"
            import glob
            import importlib
            import os

            def main():
                failed = {}
                modules = [os.path.basename(p).split(".")[0]
                           for p in glob.glob("/usr/lib/python3.11/lib-dynload/*.so")]
                for name in modules + ["numpy", "pandas", "zoneinfo", "dateutil", "pytz"]:
                    try:
                        importlib.import_module(name)
                    except Exception as e:
                        failed[name] = repr(e)
                return {"imported": len(modules) > 40, "failed": failed}
        "#))
        .await;
    assert_result(&job, &json!({"imported": true, "failed": {}}));
}

/// Runs raw x86 machine code (`code`, ending in `ret`) and returns what it left in rax.
const MACHINE_CODE: &str = r#"
import ctypes
import mmap

def run(code):
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return ctypes.CFUNCTYPE(ctypes.c_long)(address)()
"#;

#[tokio::test]
async fn i386_system_calls_kill_the_job() {
    let sandbox = sandbox().await;
    // unshare(CLONE_NEWUSER) by its i386 number (310) through int 0x80, where the x86-64
    // numbers the filter matches would not apply: the filter kills any other architecture.
    let job = sandbox
        .contain(&format!(
            "{}{}",
            py(MACHINE_CODE),
            py(r#"
                def main():
                    # push rbx; mov eax, 310; mov ebx, 0x10000000; int 0x80; pop rbx; ret
                    return run(bytes.fromhex("53" "b836010000" "bb00000010" "cd80" "5b" "c3"))
            "#)
        ))
        .await;
    assert_failure(&job, "killed", "SIGSYS");
    assert_eq!(job["signal"], "SIGSYS", "{job}");
}

#[tokio::test]
async fn x32_system_calls_do_not_exist() {
    let sandbox = sandbox().await;
    // unshare(CLONE_NEWUSER) by its x32 number (bit 30 | 272): the filter cannot match x32
    // numbers, so the worker only runs where the kernel refuses them (its self-test checks).
    let job = sandbox
        .contain(&format!(
            "{}{}",
            py(MACHINE_CODE),
            py(r#"
                def main():
                    # mov eax, 0x40000110; mov edi, 0x10000000; syscall; ret
                    return run(bytes.fromhex("b810010040" "bf00000010" "0f05" "c3"))
            "#)
        ))
        .await;
    assert_result(&job, &json!(-ENOSYS));
}
