//! Benchmark: the cost of one sandbox run, measured directly on the executor (no queue, no
//! HTTP): nsjail + python + harness for a trivial script and for one that imports pandas.
//!
//! Run by `make bench` with the same environment a worker gets.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::time::{Duration, Instant};

use clap::Parser;
use shared::job::{ClaimedJob, JobId, Lease, Limits};
use worker::config::WorkerConfig;
use worker::sandbox::{Executor, NsjailExecutor};

const RUNS: usize = 30;

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
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse_from(["worker"]);
    let executor = NsjailExecutor::new(config.sandbox)?;
    let cases = [
        ("trivial", "def main():\n    return 1\n"),
        (
            "pandas import",
            "import pandas as pd\n\ndef main():\n    return int(pd.Series([1, 2]).sum())\n",
        ),
    ];
    for (name, script) in cases {
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let started = Instant::now();
            let outcome = executor.execute(&job(script), 0).await;
            times.push(started.elapsed());
            anyhow::ensure!(
                outcome.result.is_ok(),
                "{name} failed: {:?}",
                outcome.result.err()
            );
        }
        times.sort();
        println!(
            "sandbox floor, {name:<13}: p50 {:>4} ms  p99 {:>4} ms  ({RUNS} runs, nsjail + python + harness)",
            percentile(&times, 0.5).as_millis(),
            percentile(&times, 0.99).as_millis(),
        );
    }
    Ok(())
}
