//! Measures SQLite's cross-process wake-ups: two stores on one file, each with its own pool,
//! as an API and a worker process have. One enqueues (then finishes) a job; the other waits
//! on its wake-up and claims (or re-checks), as an idle worker (or waiting request) does.
//!
//! Usage: `cargo run --release -p shared --example sqlite_wakeup [rounds]` (default 1000).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::value::RawValue;
use shared::job::{JobId, Limits, NewJob, Outcome, Output, Usage};
use shared::store::{JobStore, Schema, SqliteStore, StoreOptions};
use shared::tenant::Tenant;

const LEASE: Duration = Duration::from_secs(15);

fn job() -> NewJob {
    NewJob {
        id: JobId::new(),
        script: "def main():\n    return 1\n".to_owned(),
        limits: Limits {
            timeout: Duration::from_secs(1),
            memory_mb: 64,
        },
        created_at: Utc::now(),
        idempotency: None,
        request_id: None,
        tenant: Tenant::NONE,
        args: None,
        webhook_url: None,
    }
}

fn success() -> Outcome {
    Outcome {
        result: Ok(RawValue::from_string("1".to_owned()).expect("valid JSON")),
        stdout: Output::default(),
        stderr: Output::default(),
        usage: Usage::default(),
    }
}

/// What one round saw, each from the start of the writer's call: the call returning, the
/// listener woken, the listener seeing the change; and how many wake-ups came before the
/// change was visible (each caught by the watch's second, settling signal).
#[derive(Default)]
struct Round {
    write: Duration,
    woken: Duration,
    seen: Duration,
    early_wakes: u32,
}

fn report(name: &str, rounds: &[Round]) {
    let percentiles = |key: fn(&Round) -> Duration| {
        let mut values: Vec<Duration> = rounds.iter().map(key).collect();
        values.sort();
        let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        format!("p50 {:?} p90 {:?} p99 {:?}", at(0.5), at(0.9), at(0.99))
    };
    let early = rounds.iter().filter(|r| r.early_wakes > 0).count();
    println!("{name}, {} rounds:", rounds.len());
    println!("  writer's call returned   {}", percentiles(|r| r.write));
    println!("  listener woken           {}", percentiles(|r| r.woken));
    println!("  listener saw the change  {}", percentiles(|r| r.seen));
    println!(
        "  saw it after the call returned, by {}",
        percentiles(|r| r.seen.saturating_sub(r.write))
    );
    println!("  rounds woken before the commit was visible: {early}");
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(1000, |n| n.parse().expect("rounds is a number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let writer = SqliteStore::connect(&url, Schema::Migrate, &StoreOptions::default())
        .await
        .expect("open the writer");
    let options = StoreOptions {
        listen_queued: true,
        listen_finished: true,
        ..StoreOptions::default()
    };
    let listener = Arc::new(
        SqliteStore::connect(&url, Schema::RequireCurrent, &options)
            .await
            .expect("open the listener"),
    );
    let events = listener.events().expect("a listening store has wake-ups");

    let mut enqueued = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // Let the previous round's wake-ups (from the listener's own claim too) pass, then
        // drop the permit they left, so each round waits from a clean start.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let _ = tokio::time::timeout(Duration::ZERO, events.queued.notified()).await;
        let started = Instant::now();
        let listening = tokio::spawn({
            let listener = Arc::clone(&listener);
            let queued = Arc::clone(&events.queued);
            async move {
                let mut round = Round::default();
                loop {
                    queued.notified().await;
                    if round.woken.is_zero() {
                        round.woken = started.elapsed();
                    }
                    let claimed = listener.claim("listener", 1, LEASE).await.expect("claim");
                    if !claimed.is_empty() {
                        round.seen = started.elapsed();
                        return round;
                    }
                    round.early_wakes += 1;
                }
            }
        });
        writer.enqueue(&job()).await.expect("enqueue");
        let write = started.elapsed();
        let mut round = listening.await.expect("listener task");
        round.write = write;
        enqueued.push(round);
    }
    report("enqueue -> idle worker claims it", &enqueued);

    let mut finished = Vec::with_capacity(rounds);
    let mut changed = events.changed.subscribe();
    for _ in 0..rounds {
        let job = job();
        writer.enqueue(&job).await.expect("enqueue");
        let lease = writer
            .claim("writer", 1, LEASE)
            .await
            .expect("claim")
            .remove(0)
            .lease;
        tokio::time::sleep(Duration::from_millis(5)).await;
        changed.mark_unchanged();
        let started = Instant::now();
        let mut round = Round::default();
        let waiting = async {
            loop {
                changed.changed().await.expect("store open");
                if round.woken.is_zero() {
                    round.woken = started.elapsed();
                }
                let done = listener.terminal_among(&[job.id]).await.expect("query");
                if done.contains(&job.id) {
                    round.seen = started.elapsed();
                    return;
                }
                round.early_wakes += 1;
            }
        };
        let outcome = success();
        let write = async {
            writer.finish(&lease, &outcome).await.expect("finish");
            started.elapsed()
        };
        let (write, ()) = tokio::join!(write, waiting);
        round.write = write;
        finished.push(round);
    }
    report("finish -> waiting request sees it", &finished);
}
