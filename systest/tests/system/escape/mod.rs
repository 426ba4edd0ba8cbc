//! Hostile scripts. Each attack must fail in the specific way the security model promises,
//! while an honest job runs next to it on the same worker and still succeeds, the API still
//! answers `/health`, and no process of the job's sandbox uids is left on the host.

mod between_jobs;
mod network;
mod reading;
mod writing;

pub(crate) use between_jobs::{assert_overlapped, holder};

mod endings;
mod memory_and_output;
mod privileges;
mod processes;

use std::net::UdpSocket;
use std::ops::Range;
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
