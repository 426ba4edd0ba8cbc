//! Benchmark: the cost of one sandbox run, measured directly on the executor (no queue, no
//! HTTP): nsjail + python + harness for a trivial script and for one that imports pandas, on
//! the cold path, then the same jobs on the warm path (a child forked from a template).
//!
//! The warm path is timed twice: one job right after another on one slot (the next child is
//! still being forked and the last one torn down beside the job), and paced, one job every
//! few milliseconds (what a lightly loaded service sees: a child ready and the host quiet).
//!
//! Run by `make bench` with the same environment a worker gets.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::time::{Duration, Instant};

use clap::Parser;
use shared::job::{ClaimedJob, JobId, Lease, Limits};
use worker::config::WorkerConfig;
use worker::sandbox::warm::WarmExecutor;
use worker::sandbox::{Executor, NsjailExecutor};

const RUNS: usize = 30;
const WARM_RUNS: usize = 300;
/// The pause between paced jobs: long enough for the previous job's teardown and the next
/// child's fork to be over.
const PACE: Duration = Duration::from_millis(10);
/// How long every slot is kept busy for the executor's own throughput.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(4);

fn job(script: &str) -> ClaimedJob {
    ClaimedJob {
        lease: Lease {
            job_id: JobId::new(),
            worker_id: "bench".into(),
            attempt: 1,
        },
        created_at: chrono::Utc::now(),
        script: script.into(),
        limits: Limits {
            timeout: Duration::from_secs(30),
            memory_mb: 512,
        },
        request_id: None,
        args: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

async fn measure(
    executor: &dyn Executor,
    path: &str,
    name: &str,
    script: &str,
    runs: usize,
    pace: Option<Duration>,
) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        if let Some(pause) = pace {
            tokio::time::sleep(pause).await;
        }
        let started = Instant::now();
        let outcome = executor.execute(&job(script), 0, &None).await;
        times.push(started.elapsed());
        anyhow::ensure!(
            outcome.result.is_ok(),
            "{path} {name} failed: {:?}",
            outcome.result.err()
        );
    }
    times.sort();
    println!(
        "sandbox floor, {path} {name:<13}: p50 {:>6.2} ms  p99 {:>6.2} ms  ({runs} runs)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

/// Jobs per second with every slot running one job after another: the sandbox side's ceiling,
/// without the queue and HTTP.
async fn throughput(
    executor: &std::sync::Arc<WarmExecutor>,
    slots: usize,
    name: &str,
    script: &'static str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..slots {
        let executor = std::sync::Arc::clone(executor);
        tasks.spawn(async move {
            let mut jobs = 0usize;
            while started.elapsed() < THROUGHPUT_WINDOW {
                let outcome = executor.execute(&job(script), slot, &None).await;
                anyhow::ensure!(outcome.result.is_ok(), "{:?}", outcome.result.err());
                jobs += 1;
            }
            anyhow::Ok(jobs)
        });
    }
    let mut jobs = 0;
    while let Some(done) = tasks.join_next().await {
        jobs += done??;
    }
    println!(
        "sandbox floor, warm {name:<13}: {:>6.1} jobs/s with {slots} slots busy",
        jobs as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse_from(["worker"]);
    shared::telemetry::init(&config.log);
    let cases = [
        ("trivial", "def main():\n    return 1\n"),
        (
            "pandas import",
            "import pandas as pd\n\ndef main():\n    return int(pd.Series([1, 2]).sum())\n",
        ),
    ];
    let cold = NsjailExecutor::new(config.sandbox.clone())?;
    for (name, script) in cases {
        measure(&cold, "cold", name, script, RUNS, None).await?;
    }
    let slots = config.concurrency();
    let warm = std::sync::Arc::new(WarmExecutor::start(config.sandbox, slots).await?);
    for (name, script) in cases {
        measure(warm.as_ref(), "warm", name, script, WARM_RUNS, None).await?;
    }
    for (name, script) in cases {
        let path = format!("warm, one every {} ms,", PACE.as_millis());
        measure(warm.as_ref(), &path, name, script, WARM_RUNS, Some(PACE)).await?;
    }
    for (name, script) in cases {
        throughput(&warm, slots, name, script).await?;
    }
    Ok(())
}
