//! Escape attempts: processes.

use super::*;

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
