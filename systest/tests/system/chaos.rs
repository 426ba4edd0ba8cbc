//! Chaos: workers crash and the database restarts under load, and still no accepted job is
//! lost or completed twice. Slow and disruptive, so they are a tier of their own (`make
//! chaos`, run by `make test` after the other tiers), one at a time: the Postgres restart
//! would break concurrently running tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{spawn_app_with, Backend, Options, TestApp};

/// One row of the jobs table, read straight from the store.
struct Row {
    id: String,
    status: String,
    error_kind: Option<String>,
    completions: i64,
    attempt: i64,
}

async fn rows(app: &TestApp) -> Vec<Row> {
    const QUERY: &str = "SELECT id, status, error_kind, completions, attempt FROM jobs";
    match app.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.database_url)
                .await
                .expect("sqlite");
            let rows: Vec<(String, String, Option<String>, i64, i64)> =
                sqlx::query_as(QUERY).fetch_all(&pool).await.expect("rows");
            rows.into_iter()
                .map(|(id, status, error_kind, completions, attempt)| Row {
                    id,
                    status,
                    error_kind,
                    completions,
                    attempt,
                })
                .collect()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.database_url)
                .await
                .expect("postgres");
            let rows: Vec<(uuid::Uuid, String, Option<String>, i32, i32)> =
                sqlx::query_as(QUERY).fetch_all(&pool).await.expect("rows");
            rows.into_iter()
                .map(|(id, status, error_kind, completions, attempt)| Row {
                    id: id.to_string(),
                    status,
                    error_kind,
                    completions: i64::from(completions),
                    attempt: i64::from(attempt),
                })
                .collect()
        }
    }
}

/// What the workers' own logs say of one job's runs, whatever the database says.
#[derive(Default)]
struct Runs {
    /// The attempt number of each run a worker started.
    started: Vec<u64>,
    /// Runs that reached their end: written back, or discarded as taken over.
    ended: usize,
    /// Whether the worker that started the latest attempt was later killed.
    latest_run_killed: bool,
}

/// Every run of every job, counted from the log files of all workers that ever ran, the
/// killed ones included (their last line may be torn, and is skipped).
fn runs_from_logs(app: &TestApp) -> HashMap<String, Runs> {
    let mut runs: HashMap<String, Runs> = HashMap::new();
    for (killed, lines) in app.worker_logs() {
        for line in lines {
            let Some(job_id) = line["span"]["job_id"].as_str() else {
                continue;
            };
            let entry = runs.entry(job_id.to_owned()).or_default();
            match line["fields"]["message"].as_str() {
                Some("job started") => {
                    let attempt = line["span"]["attempt"].as_u64().expect("attempt");
                    if entry.started.iter().all(|a| *a < attempt) {
                        entry.latest_run_killed = killed;
                    }
                    entry.started.push(attempt);
                }
                Some("job finished" | "result discarded: the job was taken over or cancelled") => {
                    entry.ended += 1;
                }
                _ => {}
            }
        }
    }
    runs
}

async fn crashing_workers(backend: Backend) {
    const JOBS: usize = 500;
    let env = vec![
        ("WORKER_LEASE_SECS", "2".to_owned()),
        ("WORKER_HEARTBEAT_MS", "300".to_owned()),
        ("WORKER_CONCURRENCY", "2".to_owned()),
    ];
    let mut app = spawn_app_with(Options {
        with_worker: false,
        backend,
        capture_logs: true,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        app.start_worker(&env);
    }
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let seconds = 0.1 + 0.1 * (i % 10) as f64;
        let script =
            format!("import time\n\ndef main():\n    time.sleep({seconds})\n    return {i}\n");
        let (status, body) = app.submit(json!({"script": script})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }

    let started = Instant::now();
    let mut kills = 0;
    loop {
        let unfinished = rows(&app)
            .await
            .iter()
            .filter(|r| r.status == "queued" || r.status == "running")
            .count();
        if unfinished == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{unfinished} jobs never finished"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        app.crash_and_restart_worker(kills % 3, &env).await;
        kills += 1;
    }

    let rows = rows(&app).await;
    let by_id: HashMap<&str, &Row> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let lost = ids
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .count();
    let duplicated = rows.iter().filter(|r| r.completions > 1).count();
    let worker_lost = rows
        .iter()
        .filter(|r| r.error_kind.as_deref() == Some("worker_lost"))
        .count();
    let succeeded = rows.iter().filter(|r| r.status == "succeeded").count();
    eprintln!(
        "chaos {backend:?}: {JOBS} jobs, {kills} worker kills, {lost} lost, {duplicated} \
         completed twice, {succeeded} succeeded, {worker_lost} out of attempts, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    for row in &rows {
        match row.status.as_str() {
            "succeeded" => assert_eq!(row.completions, 1, "{}", row.id),
            "failed" => {
                assert_eq!(row.error_kind.as_deref(), Some("worker_lost"), "{}", row.id);
                assert_eq!(row.completions, 0, "{}", row.id);
            }
            other => panic!("job {} ended {other}", row.id),
        }
    }
    assert_eq!(succeeded + worker_lost, JOBS);

    // Counted again from outside the store, where its status guard cannot hide a second run:
    // no claim started two runs, no attempt ran twice, and only the run that was recorded
    // reached its end (a killed worker's sandbox dies with it, mid-run).
    let runs = runs_from_logs(&app);
    let mut restarted = 0;
    let mut killed_after_writing = 0;
    for row in &rows {
        let job = runs
            .get(&row.id)
            .unwrap_or_else(|| panic!("no worker ever started job {}", row.id));
        let mut attempts = job.started.clone();
        attempts.sort_unstable();
        attempts.dedup();
        assert_eq!(
            attempts.len(),
            job.started.len(),
            "job {} had an attempt started twice: {:?}",
            row.id,
            job.started
        );
        // At most one run per claim. (Fewer runs than claims is possible: a worker killed
        // between claiming and logging the start never began that run.)
        assert!(
            i64::try_from(job.started.len()).unwrap_or(i64::MAX) <= row.attempt
                && job
                    .started
                    .iter()
                    .all(|a| i64::try_from(*a).unwrap_or(i64::MAX) <= row.attempt),
            "job {}: the workers started {:?}, the store counts {} attempts",
            row.id,
            job.started,
            row.attempt
        );
        let expected_ends = usize::from(row.status == "succeeded");
        // A worker killed after its result was committed but before it logged the write never
        // says so: the only run allowed to end silently is the latest, in a killed worker.
        if job.ended == 0 && row.status == "succeeded" && job.latest_run_killed {
            killed_after_writing += 1;
        } else {
            assert_eq!(
                job.ended, expected_ends,
                "job {} ({}) ran to its end {} times",
                row.id, row.status, job.ended
            );
        }
        if job.started.len() > 1 {
            restarted += 1;
        }
    }
    eprintln!(
        "chaos {backend:?}: {restarted} jobs ran again after a crash, each to its end once; \
         {killed_after_writing} written back by a worker killed before it could log so"
    );
    assert!(
        restarted > 0,
        "the kills interrupted no job: the test proved nothing"
    );
}

#[tokio::test]
async fn chaos_crashing_workers_lose_and_duplicate_nothing_on_sqlite() {
    crashing_workers(Backend::Sqlite).await;
}

#[tokio::test]
async fn chaos_crashing_workers_lose_and_duplicate_nothing_on_postgres() {
    crashing_workers(Backend::Postgres).await;
}

/// Restarts the local Postgres cluster; started again when dropped, even if the test fails.
struct PostgresOutage {
    version: String,
}

impl PostgresOutage {
    fn cluster(action: &str, version: &str) {
        let status = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", version, "main", action])
            .status()
            .expect("pg_ctlcluster runs");
        assert!(status.success(), "pg_ctlcluster {action}");
    }

    fn begin() -> Self {
        let version = std::fs::read_dir("/etc/postgresql")
            .expect("a local Postgres cluster")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .expect("a Postgres version");
        Self::cluster("stop", &version);
        Self { version }
    }
}

impl Drop for PostgresOutage {
    fn drop(&mut self) {
        Self::cluster("start", &self.version);
    }
}

#[tokio::test]
async fn chaos_postgres_restart_under_load_loses_no_accepted_job() {
    let mut app = spawn_app_with(Options {
        backend: Backend::Postgres,
        capture_logs: true,
        api_env: vec![("DATABASE_ACQUIRE_TIMEOUT_SECS", "1".to_owned())],
        worker_env: vec![("DATABASE_ACQUIRE_TIMEOUT_SECS", "1".to_owned())],
        ..Options::default()
    })
    .await;
    let submit = |i: usize| {
        let app = &app;
        async move {
            let script = format!("def main():\n    return {i}\n");
            app.submit(json!({"script": script})).await
        }
    };
    let mut accepted = Vec::new();
    let mut unavailable = 0;
    let mut record = |(status, body): (StatusCode, serde_json::Value)| match status {
        StatusCode::ACCEPTED => accepted.push(body["id"].as_str().expect("id").to_owned()),
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(body["code"], "store_unavailable", "{body}");
            unavailable += 1;
        }
        other => panic!("unexpected {other}: {body}"),
    };
    for i in 0..20 {
        record(submit(i).await);
    }
    let outage = PostgresOutage::begin();
    let (ready, _) = app.get("/ready").await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    let outage_started = Instant::now();
    let mut i = 20;
    while outage_started.elapsed() < Duration::from_secs(5) {
        record(submit(i).await);
        i += 1;
    }
    drop(outage);
    let recovery = Instant::now();
    loop {
        let (ready, _) = app.get("/ready").await;
        if ready == StatusCode::OK {
            break;
        }
        assert!(
            recovery.elapsed() < Duration::from_secs(60),
            "api never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..20 {
        record(submit(i).await);
        i += 1;
    }
    assert!(unavailable > 0, "requests during the outage must get 503");
    for id in &accepted {
        let job = wait_or_explain(&mut app, id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    eprintln!(
        "postgres restart: {} accepted and finished, {unavailable} answered 503 during the outage",
        accepted.len()
    );
}

/// Waits for job `id` to finish; if it does not, fails with what the worker, the jobs table
/// and Postgres were doing, so a failure on a machine nobody watched can still be explained.
async fn wait_or_explain(app: &mut TestApp, id: &str, limit: Duration) -> serde_json::Value {
    let job = match app.poll_until_terminal(id, limit).await {
        Ok(job) => return job,
        Err(job) => job,
    };
    let worker = app.worker_exit(0);
    let pool = sqlx::PgPool::connect(&app.database_url)
        .await
        .expect("postgres");
    let jobs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status || ' attempt=' || attempt || ' worker=' || coalesce(worker_id, '-') \
             || ' lease=' || coalesce(lease_expires_at::text, '-'), count(*) \
         FROM jobs GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    let sessions: Vec<(String,)> = sqlx::query_as(
        "SELECT coalesce(state, '-') || ' wait=' || coalesce(wait_event, '-') || ' ' \
             || left(query, 120) \
         FROM pg_stat_activity WHERE datname = current_database() \
           AND pid <> pg_backend_pid()",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    let worker_log = app.process_log("worker-0");
    let lines: Vec<&str> = worker_log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    panic!(
        "job {id} is still {job}\nworker exit: {worker:?}\njobs: {jobs:?}\n\
         sessions: {sessions:#?}\nlast log lines:\n{}",
        tail.join("\n")
    );
}
