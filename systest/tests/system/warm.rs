//! The warm path: jobs forked from one template are as isolated from each other as cold jobs,
//! start afresh in everything a script can observe, and outlive neither their template nor
//! their worker. These tests pin `SANDBOX_MODE=warm` whatever the suite runs with.

use std::ops::Range;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::free_port;
use crate::escape::{
    assert_overlapped, assert_result, holder, processes_owned_by, py, sandbox_with, Sandbox,
    ECONNREFUSED, ENOENT,
};
use crate::metrics::{scrape, scrape_until};

async fn warm(extra: Vec<(&'static str, String)>) -> Sandbox {
    let mut env = vec![("SANDBOX_MODE", "warm".to_owned())];
    env.extend(extra);
    sandbox_with(env).await
}

/// One slot: every job is forked from the same template, back to back.
async fn one_template() -> Sandbox {
    warm(vec![("WORKER_CONCURRENCY", "1".to_owned())]).await
}

/// One slot, with the worker's metrics served at the returned address, and those metrics once
/// the worker's self-tests have run (one job cold, one warm) and it takes jobs.
async fn metered_template() -> (Sandbox, String, crate::metrics::Exposition) {
    let port = free_port();
    let sandbox = warm(vec![
        ("METRICS_ADDR", format!("127.0.0.1:{port}")),
        ("WORKER_CONCURRENCY", "1".to_owned()),
    ])
    .await;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let ready = scrape_until(
        &sandbox.app.client,
        &metrics,
        Duration::from_secs(30),
        |m| warm_starts(m) >= 1.0,
    )
    .await;
    (sandbox, metrics, ready)
}

/// Jobs started on a light template so far.
fn warm_starts(metrics: &crate::metrics::Exposition) -> f64 {
    metrics.value("runbox_sandbox_warm_starts_total", &[("kind", "light")])
}

/// The uids the worker's templates run as (above its slots' job uids).
fn template_uids(sandbox: &Sandbox) -> Range<u32> {
    let slots = sandbox.uids.end - sandbox.uids.start;
    sandbox.uids.end..sandbox.uids.end + slots
}

async fn run(sandbox: &Sandbox, script: &str) -> Value {
    let (_, job) = sandbox.app.execute(json!({ "script": script })).await;
    job
}

#[tokio::test]
async fn concurrent_jobs_cannot_reach_each_others_loopback_listener() {
    let sandbox = warm(Vec::new()).await;
    let setup = "import socket\nserver = socket.socket()\n\
                 server.bind(('127.0.0.1', 47001))\nserver.listen(1)";
    let probe = py(r#"
        import socket
        import time

        def main():
            time.sleep(1)
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", 47001))
                found = 0
            except OSError as e:
                found = e.errno
            return {"at": time.time(), "connect": found}
    "#);
    let (holder, prober) = sandbox
        .alongside(
            json!({ "script": holder(setup, 3.0) }),
            json!({ "script": probe }),
        )
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["connect"], ECONNREFUSED, "{prober}");
}

#[tokio::test]
async fn concurrent_jobs_cannot_share_posix_message_queues() {
    let sandbox = warm(Vec::new()).await;
    // O_CREAT | O_RDWR, mode 0o666: a queue any job of the same IPC namespace could open.
    let setup = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                 assert libc.mq_open(b'/runbox-neighbour', 0o102, 0o666, None) >= 0";
    let probe = py(r#"
        import ctypes
        import time

        def main():
            time.sleep(1)
            libc = ctypes.CDLL(None, use_errno=True)
            found = libc.mq_open(b"/runbox-neighbour", 2)
            return {"at": time.time(), "mq_open": ctypes.get_errno() if found < 0 else 0}
    "#);
    let (holder, prober) = sandbox
        .alongside(
            json!({ "script": holder(setup, 3.0) }),
            json!({ "script": probe }),
        )
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["mq_open"], ENOENT, "{prober}");
}

#[tokio::test]
async fn a_job_sees_and_can_signal_no_process_of_a_concurrent_job() {
    let sandbox = warm(Vec::new()).await;
    let setup = "import os\nif os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)";
    let probe = py(r#"
        import os
        import time

        def main():
            time.sleep(1)
            reachable = []
            for pid in range(1, 5000):
                try:
                    os.kill(pid, 0)
                    reachable.append(pid)
                except OSError:
                    pass
            return {"at": time.time(), "reachable": reachable}
    "#);
    let (holder, prober) = sandbox
        .alongside(
            json!({ "script": holder(setup, 3.0) }),
            json!({ "script": probe }),
        )
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["reachable"], json!([1]), "{prober}");
}

#[tokio::test]
async fn randomness_differs_between_jobs_forked_from_one_template() {
    let sandbox = one_template().await;
    let script = py(r#"
        import os
        import random
        import uuid

        import numpy

        def main():
            return {
                "numpy": numpy.random.rand(),
                "numpy_rng": numpy.random.default_rng().random(),
                "random": random.random(),
                "uuid4": str(uuid.uuid4()),
                "urandom": os.urandom(16).hex(),
            }
    "#);
    let mut seen: Vec<Value> = Vec::new();
    for _ in 0..3 {
        let job = run(&sandbox, &script).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        seen.push(job["result"].clone());
    }
    for source in ["numpy", "numpy_rng", "random", "uuid4", "urandom"] {
        let values: Vec<&Value> = seen.iter().map(|r| &r[source]).collect();
        for (i, value) in values.iter().enumerate() {
            assert!(
                !values[i + 1..].contains(value),
                "{source} repeated between jobs: {values:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_thread_or_child_left_behind_neither_delays_the_next_job_nor_survives() {
    let sandbox = one_template().await;
    let leaver = py(r#"
        import os
        import threading
        import time

        def main():
            threading.Thread(target=time.sleep, args=(30,)).start()
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            return "left"
    "#);
    let started = Instant::now();
    let left = run(&sandbox, &leaver).await;
    assert_result(&left, &json!("left"));
    let next = run(&sandbox, "def main():\n    return 'next'\n").await;
    assert_result(&next, &json!("next"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the jobs took {:?}",
        started.elapsed()
    );
    sandbox.assert_healthy().await;
}

#[tokio::test]
async fn a_job_that_corrupts_the_interpreter_does_not_affect_the_next() {
    let sandbox = one_template().await;
    let vandal = py(r#"
        import builtins
        import json
        import sys

        def main():
            json.loads = lambda *args, **kwargs: "forged"
            json.decoder.scanstring = None
            sys.modules["json"] = None
            sys.modules.pop("collections", None)
            builtins.print = None
            builtins.len = lambda _: -1
            return "vandalised"
    "#);
    let vandalised = run(&sandbox, &vandal).await;
    assert_result(&vandalised, &json!("vandalised"));
    let honest = py(r#"
        import collections
        import json

        def main():
            print("printed")
            return {"dumps": json.dumps([1]), "len": len([1, 2]), "counter": collections.Counter("aa")["a"]}
    "#);
    let job = run(&sandbox, &honest).await;
    assert_result(&job, &json!({"dumps": "[1]", "len": 2, "counter": 2}));
    assert_eq!(job["stdout"], "printed\n", "{job}");
}

#[tokio::test]
async fn a_pandas_job_is_charged_only_for_what_it_allocates() {
    let sandbox = warm(Vec::new()).await;
    // The template's numpy and pandas pages are shared, not the job's: a 32 MiB job can use
    // pandas (a cold sandbox needs more than that for the import alone), and 48 MiB of its own
    // data still trips its limit.
    let pandas = py(r#"
        import pandas as pd

        def main():
            return int(pd.DataFrame({"a": range(1000)}).a.sum())
    "#);
    let (_, job) = sandbox
        .app
        .execute(json!({ "script": pandas, "memory_mb": 32 }))
        .await;
    assert_result(&job, &json!(499_500));
    let hog = "def main():\n    block = bytearray(48 << 20)\n    return len(block)\n";
    let (_, job) = sandbox
        .app
        .execute(json!({ "script": hog, "memory_mb": 32 }))
        .await;
    assert_eq!(job["error_kind"], "memory_limit", "{job}");
}

#[tokio::test]
async fn a_job_gets_its_own_memory_limit_above_and_below_a_waiting_childs() {
    let (sandbox, metrics, before) = metered_template().await;
    let grab = |mib: u32| {
        format!("def main():\n    block = bytearray({mib} << 20)\n    return len(block) >> 20\n")
    };
    // More than a child waits with (256 MiB), then less, then more again: each job gets its
    // own limit, warm, from the same template.
    let (_, big) = sandbox
        .app
        .execute(json!({ "script": grab(400), "memory_mb": 1024 }))
        .await;
    assert_result(&big, &json!(400));
    let (_, small) = sandbox
        .app
        .execute(json!({ "script": grab(64), "memory_mb": 32 }))
        .await;
    assert_eq!(small["error_kind"], "memory_limit", "{small}");
    let (_, big_again) = sandbox
        .app
        .execute(json!({ "script": grab(300), "memory_mb": 512 }))
        .await;
    assert_result(&big_again, &json!(300));
    let after = scrape(&sandbox.app.client, &metrics).await;
    assert_eq!(warm_starts(&after), warm_starts(&before) + 3.0, "{after:?}");
    assert_eq!(
        after.value(
            "runbox_sandbox_template_restarts_total",
            &[("kind", "light"), ("reason", "failed")]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_job_that_closes_its_output_early_still_runs_to_its_own_end() {
    let sandbox = one_template().await;
    // Closing stdout, stderr and the result pipe is how the harness says the job is over; a
    // script that does it itself without a record is still waited for, and still timed.
    let quiet = py(r#"
        import os, time

        def main():
            for fd in (1, 2, 3):
                os.close(fd)
            time.sleep(0.5)
            return "done"
    "#);
    let (_, job) = sandbox.app.execute(json!({ "script": quiet })).await;
    assert_eq!(job["status"], "failed", "{job}");
    let stuck = py(r#"
        import os

        def main():
            for fd in (1, 2, 3):
                os.close(fd)
            while True:
                pass
    "#);
    let (_, job) = sandbox
        .app
        .execute(json!({ "script": stuck, "timeout": 1 }))
        .await;
    assert_eq!(job["error_kind"], "timeout", "{job}");
}

/// Host pids of the processes whose real uid is in `uids` and whose command line has `needle`.
fn processes_running(uids: &Range<u32>, needle: &str) -> Vec<i32> {
    processes_owned_by(uids)
        .iter()
        .filter_map(|entry| entry.split_whitespace().next()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .collect()
}

#[tokio::test]
async fn jobs_run_warm_and_a_killed_template_is_replaced_without_losing_its_job() {
    let (sandbox, metrics, before) = metered_template().await;
    let templates = template_uids(&sandbox);
    let first = run(
        &sandbox,
        "import json\n\ndef main():\n    return json.loads('1')\n",
    )
    .await;
    assert_result(&first, &json!(1));
    let after = scrape(&sandbox.app.client, &metrics).await;
    assert_eq!(warm_starts(&after), warm_starts(&before) + 1.0);
    let cold = |m: &crate::metrics::Exposition| {
        [
            "cold_mode",
            "no_template",
            "template_failed",
            "warm_unavailable",
        ]
        .iter()
        .map(|reason| m.value("runbox_sandbox_cold_starts_total", &[("reason", reason)]))
        .sum::<f64>()
    };
    assert_eq!(cold(&after), 0.0, "only the self-test ran cold: {after:?}");

    let (status, job) = sandbox
        .app
        .submit(json!({ "script": "import time\n\ndef main():\n    time.sleep(2)\n    return 'survived'\n" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.app.job(&id).await.1["status"] != "running" {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victims = processes_running(&templates, "/job/template.py");
    assert!(
        !victims.is_empty(),
        "no template process found for uids {templates:?}"
    );
    // The list holds the templates and their idle children (forks, same command line); a
    // child dies with its template, so only some kills need to find their process.
    let killed = victims
        .iter()
        .filter(|pid| {
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .count();
    assert!(killed > 0, "could not kill any of {victims:?}");
    let job = sandbox
        .app
        .wait_for_terminal(&id, Duration::from_secs(30))
        .await;
    assert_result(&job, &json!("survived"));

    // Replaced: jobs run warm again, on a new template process.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = run(&sandbox, "def main():\n    return 2\n").await;
        assert_result(&job, &json!(2));
        let now = scrape(&sandbox.app.client, &metrics).await;
        if warm_starts(&now) > warm_starts(&after) {
            assert!(
                now.value(
                    "runbox_sandbox_template_restarts_total",
                    &[("kind", "light"), ("reason", "failed")]
                ) >= 1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no warm start after the template was killed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replacements = processes_running(&templates, "/job/template.py");
    assert!(
        replacements.iter().all(|pid| !victims.contains(pid)) && !replacements.is_empty(),
        "{victims:?} -> {replacements:?}"
    );
    scrape_until(&sandbox.app.client, &metrics, Duration::from_secs(5), |m| {
        m.value("runbox_jobs_running", &[]) == 0.0
    })
    .await;
}

async fn a_killed_worker_takes_every_sandbox_with_it(mode: &str) {
    let mut sandbox = sandbox_with(vec![("SANDBOX_MODE", mode.to_owned())]).await;
    let (status, job) = sandbox
        .app
        .submit(
            json!({ "script": "import time\n\ndef main():\n    time.sleep(30)\n", "timeout": 60 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sandbox.app.job(&id).await.1["status"] != "running" {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let everything = sandbox.uids.start..template_uids(&sandbox).end;
    // "running" is recorded as the worker claims the job, a moment before its sandbox runs.
    while processes_owned_by(&sandbox.uids).is_empty() {
        assert!(Instant::now() < deadline, "the job's sandbox never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sandbox.app.kill_worker(0).await;
    let killed = Instant::now();
    loop {
        let left = processes_owned_by(&everything);
        if left.is_empty() {
            break;
        }
        // Within a second each has been killed: SIGKILL is pending, and it runs no code of its
        // own again (on a loaded host the exit itself may take longer to be scheduled).
        if killed.elapsed() > Duration::from_secs(1) {
            let alive: Vec<&String> = left.iter().filter(|p| !sigkill_pending(p)).collect();
            assert!(
                alive.is_empty(),
                "not killed 1 s after the worker died: {alive:?}"
            );
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "killed but not gone 10 s after the worker died: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the process ("pid name") has a SIGKILL pending, or is gone.
fn sigkill_pending(process: &str) -> bool {
    let pid = process.split_whitespace().next().unwrap_or_default();
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    ["SigPnd:", "ShdPnd:"].iter().any(|field| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << 8) != 0)
    })
}

#[tokio::test]
async fn a_killed_worker_takes_its_warm_sandboxes_and_templates_with_it() {
    a_killed_worker_takes_every_sandbox_with_it("warm").await;
}

#[tokio::test]
async fn a_killed_worker_takes_its_cold_sandboxes_with_it() {
    a_killed_worker_takes_every_sandbox_with_it("cold").await;
}

#[tokio::test]
async fn a_template_is_replaced_after_its_last_job_and_jobs_go_on() {
    let port = free_port();
    let sandbox = warm(vec![
        ("METRICS_ADDR", format!("127.0.0.1:{port}")),
        ("WORKER_CONCURRENCY", "1".to_owned()),
        ("SANDBOX_TEMPLATE_MAX_JOBS", "2".to_owned()),
    ])
    .await;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let replaced = |m: &crate::metrics::Exposition| {
        m.value(
            "runbox_sandbox_template_restarts_total",
            &[("kind", "light"), ("reason", "max_jobs")],
        )
    };
    // Each replacement starts in the background while the old template keeps serving; it
    // serves its two jobs once it is ready, and is replaced in turn.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        let job = run(&sandbox, &format!("def main():\n    return {i}\n")).await;
        assert_result(&job, &json!(i));
        if replaced(&scrape(&sandbox.app.client, &metrics).await) >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "templates were not replaced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
