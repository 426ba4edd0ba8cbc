//! Horizontal scaling: several worker processes share one Postgres queue.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{spawn_app_with, Backend, Options};

#[tokio::test]
async fn three_workers_on_postgres_run_300_jobs_each_exactly_once() {
    let mut app = spawn_app_with(Options {
        with_worker: false,
        backend: Backend::Postgres,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        app.start_worker(&[("WORKER_CONCURRENCY", "1".to_owned())]);
    }

    let mut ids = Vec::new();
    for i in 0..300 {
        let (status, body) = app
            .submit(json!({"script": format!("def main():\n    return {i}\n")}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push((i, body["id"].as_str().expect("id").to_owned()));
    }

    let mut runs_per_worker: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for (i, id) in &ids {
        let job = app.wait_for_terminal(id, Duration::from_secs(240)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"], *i, "{job}");
        assert_eq!(job["attempt"], 1, "ran more than once: {job}");
        assert!(seen.insert(id.clone()));
        let worker = job["worker_id"].as_str().expect("worker_id").to_owned();
        *runs_per_worker.entry(worker).or_default() += 1;
    }
    assert_eq!(runs_per_worker.values().sum::<usize>(), 300);
    assert!(
        runs_per_worker.len() > 1,
        "only one worker ran jobs: {runs_per_worker:?}"
    );
}
