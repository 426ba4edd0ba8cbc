//! Escape attempts: memory and output.

use super::*;

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
                busy = sum(i * i for i in range(6_000_000)) % 1000
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
