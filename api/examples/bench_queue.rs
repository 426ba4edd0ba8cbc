//! Benchmark of the queue alone: a worker in noop mode (jobs succeed without running) so
//! only the store, the claim loop and the API are measured.
//!
//! Usage: `bench_queue sqlite|postgres` after a release build (the api and worker binaries
//! are taken from the same target directory as this example).
//! - drain: 20,000 jobs pre-inserted, then drained by one worker process: jobs/s;
//! - sustained: 4 producers calling `POST /jobs` while one worker drains 5,000 jobs: jobs/s;
//! - latency: one job at a time, `POST /jobs` → completion seen via `GET /jobs/<id>?wait=`,
//!   p50/p99 over 500.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde_json::json;
use shared::job::{JobId, JobStatus, Limits, NewJob};
use shared::store::{self, JobStore, Schema, StoreOptions};
use shared::tenant::Tenant;
use tokio::process::{Child, Command};

const DRAIN_JOBS: usize = 20_000;
const SUSTAINED_JOBS: usize = 5_000;
const PRODUCERS: usize = 4;
const LATENCY_JOBS: usize = 500;
const SCRIPT: &str = "def main():\n    return 1\n";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `<target>/release/<binary>`, beside this example's `<target>/release/examples/`, so a
/// `CARGO_TARGET_DIR` build runs its own binaries.
fn binary_path(binary: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("the example is not in <target>/release/examples")?;
    Ok(release.join(binary))
}

fn spawn(binary: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
    Command::new(binary_path(binary)?)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        // Workers record metrics as in production, on a port of the kernel's choosing: the
        // worker `make bench` started for the /execute figures still holds its own.
        .env("METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("starting {binary} (run from the repository root after a release build)")
        })
}

async fn succeeded(store: &dyn JobStore) -> anyhow::Result<u64> {
    Ok(store
        .count_by_status()
        .await?
        .into_iter()
        .find(|(status, _)| *status == JobStatus::Succeeded)
        .map_or(0, |(_, n)| n))
}

async fn wait_for_succeeded(store: &dyn JobStore, target: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while succeeded(store).await? < target {
        anyhow::ensure!(Instant::now() < deadline, "queue did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn pre_insert(store: &Arc<dyn JobStore>, n: usize) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            for _ in (chunk..n).step_by(8) {
                store
                    .enqueue(&NewJob {
                        id: JobId::new(),
                        script: SCRIPT.to_owned(),
                        limits: Limits {
                            timeout: Duration::from_secs(10),
                            memory_mb: 256,
                        },
                        created_at: Utc::now(),
                        idempotency: None,
                        request_id: None,
                        tenant: Tenant::NONE,
                        args: None,
                        webhook_url: None,
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn post_job(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/jobs"))
        .json(&json!({ "script": SCRIPT }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 202,
        "POST /jobs: {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    body["id"]
        .as_str()
        .map(str::to_owned)
        .context("POST /jobs without id")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let dir = tempfile::tempdir()?;
    let (url, pg_name) = match backend.as_str() {
        "sqlite" => (
            format!("sqlite://{}", dir.path().join("jobs.db").display()),
            None,
        ),
        "postgres" => {
            let admin = std::env::var("BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let base = admin
                .rsplit_once('/')
                .map_or(admin.as_str(), |(b, _)| b)
                .to_owned();
            let name = format!("runbox_bench_{}", uuid::Uuid::new_v4().simple());
            (format!("{base}/{name}"), Some((admin, name)))
        }
        other => anyhow::bail!("unknown backend {other}; use sqlite or postgres"),
    };
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let common = vec![("DATABASE_URL", url.clone())];

    let mut api_env = common.clone();
    api_env.push(("PORT", port.to_string()));
    let api = spawn("api", &api_env)?;
    api::webhooks::install_tls_provider();
    let client = reqwest::Client::new();
    let ready_by = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{base}/ready"))
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        anyhow::ensure!(Instant::now() < ready_by, "api did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = store::connect(&url, Schema::RequireCurrent, &StoreOptions::default()).await?;

    pre_insert(&store, DRAIN_JOBS).await?;
    let mut worker_env = common.clone();
    worker_env.push(("WORKER_EXECUTOR", "noop".into()));
    worker_env.push((
        "WORKER_CONCURRENCY",
        std::env::var("BENCH_WORKER_CONCURRENCY").unwrap_or_else(|_| "4096".into()),
    ));
    worker_env.push(("DATABASE_MAX_CONNECTIONS", "16".into()));
    let started = Instant::now();
    let worker = spawn("worker", &worker_env)?;
    wait_for_succeeded(store.as_ref(), DRAIN_JOBS as u64).await?;
    let elapsed = started.elapsed();
    println!(
        "queue {backend:<8} drain:     {:>7.0} jobs/s  ({DRAIN_JOBS} pre-inserted jobs, one noop worker, {:.2} s)",
        DRAIN_JOBS as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let client = client.clone();
        let base = base.clone();
        producers.push(tokio::spawn(async move {
            for _ in 0..SUSTAINED_JOBS / PRODUCERS {
                post_job(&client, &base).await?;
            }
            anyhow::Ok(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    wait_for_succeeded(store.as_ref(), (DRAIN_JOBS + SUSTAINED_JOBS) as u64).await?;
    let elapsed = started.elapsed();
    println!(
        "queue {backend:<8} sustained: {:>7.0} jobs/s  ({SUSTAINED_JOBS} jobs from {PRODUCERS} producers via POST /jobs while draining, {:.2} s)",
        SUSTAINED_JOBS as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    let mut times = Vec::with_capacity(LATENCY_JOBS);
    for _ in 0..LATENCY_JOBS {
        let started = Instant::now();
        let id = post_job(&client, &base).await?;
        let job: serde_json::Value = client
            .get(format!("{base}/jobs/{id}?wait=10"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(job["status"] == "succeeded", "job not done: {job}");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "queue {backend:<8} latency:   p50 {:.1} ms  p99 {:.1} ms  (POST /jobs -> completion seen, {LATENCY_JOBS} one at a time)",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0
    );

    drop(store);
    drop(worker);
    drop(api);
    if let Some((admin, name)) = pg_name {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}
