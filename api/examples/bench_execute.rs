//! Benchmark: `/execute` latency at light load (one request at a time) for a trivial and a
//! pandas script, and trivial-script throughput with 4 concurrent clients.
//!
//! Usage: `bench_execute http://127.0.0.1:PORT` against a running api + worker.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::time::{Duration, Instant};

use serde_json::json;

const TRIVIAL: &str = "def main():\n    return 1\n";
const PANDAS: &str =
    "import pandas as pd\n\ndef main():\n    return int(pd.Series([1, 2, 3]).sum())\n";

async fn execute(client: &reqwest::Client, base: &str, script: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/execute"))
        .json(&json!({ "script": script }))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    response.bytes().await?;
    Ok(started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let client = reqwest::Client::new();
    for _ in 0..3 {
        execute(&client, &base, TRIVIAL).await?;
    }

    for (name, script, runs) in [("trivial", TRIVIAL, 100), ("pandas", PANDAS, 40)] {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            times.push(execute(&client, &base, script).await?);
        }
        times.sort();
        println!(
            "/execute {name:<8} light load: p50 {:>4} ms  p99 {:>4} ms  ({runs} sequential requests)",
            percentile(&times, 0.5).as_millis(),
            percentile(&times, 0.99).as_millis(),
        );
    }

    let total = 200;
    let concurrency = 4;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let base = base.clone();
        clients.push(tokio::spawn(async move {
            for _ in 0..total / concurrency {
                execute(&client, &base, TRIVIAL).await?;
            }
            anyhow::Ok(())
        }));
    }
    for c in clients {
        c.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "/execute trivial throughput, concurrency {concurrency}: {:.1} jobs/s ({total} jobs in {:.1} s)",
        f64::from(total) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    Ok(())
}
