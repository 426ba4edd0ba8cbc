//! `POST /jobs` and `GET /jobs/<id>`: asynchronous submission and the job view.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{spawn_app, spawn_app_with, Options};

#[tokio::test]
async fn submitted_job_is_queued_then_reported_with_its_outcome() {
    let app = spawn_app().await;
    let response = app
        .post_request("/jobs")
        .json(&json!({"script": "def main():\n    print('hi')\n    return [1, 2]\n"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(body["status"], "queued");
    assert_eq!(location, Some(format!("/jobs/{id}")));

    let job = app.wait_for_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], json!([1, 2]));
    assert_eq!(job["stdout"], "hi\n");
    assert_eq!(job["error"], serde_json::Value::Null);
    assert_eq!(job["error_kind"], serde_json::Value::Null);
    for field in ["created_at", "started_at", "finished_at", "worker_id"] {
        assert!(job[field].is_string(), "{field} in {job}");
    }
    assert_eq!(job["attempt"], 1);
}

#[tokio::test]
async fn failed_job_reports_error_kind_in_the_view() {
    let app = spawn_app().await;
    let (_, body) = app
        .submit(json!({"script": "def main():\n    return 1 / 0\n"}))
        .await;
    let id = body["id"].as_str().expect("id");
    let job = app.wait_for_terminal(id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error_kind"], "exception");
    assert!(job["error"]
        .as_str()
        .unwrap_or_default()
        .contains("ZeroDivisionError"));
}

#[tokio::test]
async fn fifty_jobs_all_reach_a_terminal_state_exactly_once() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let (status, body) = app
            .submit(json!({"script": format!("def main():\n    return {i}\n")}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push((i, body["id"].as_str().expect("id").to_owned()));
    }
    let unique: HashSet<&String> = ids.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), 50);
    for (i, id) in &ids {
        let job = app.wait_for_terminal(id, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"], *i);
        assert_eq!(job["attempt"], 1, "ran more than once: {job}");
    }
}

#[tokio::test]
async fn unknown_job_is_a_404_and_a_malformed_id_a_400() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let (status, body) = app.job("00000000-0000-4000-8000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
    let (status, body) = app.job("not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_job_id");
}

#[tokio::test]
async fn health_and_ready_answer_json() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, _) = app.get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn get_with_wait_long_polls_until_the_job_finishes() {
    let app = spawn_app().await;
    let (_, body) = app
        .submit(
            json!({"script": "import time\n\ndef main():\n    time.sleep(1)\n    return 'late'\n"}),
        )
        .await;
    let id = body["id"].as_str().expect("id");
    let started = std::time::Instant::now();
    let (status, job) = app.get(&format!("/jobs/{id}?wait=20")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "late");
    assert!(started.elapsed() < Duration::from_secs(15));
    let (status, body) = app.get(&format!("/jobs/{id}?wait=99")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "wait");
}

#[tokio::test]
async fn job_of_a_crashed_worker_is_rerun_by_another_after_its_lease_expires() {
    let short_lease = vec![("WORKER_LEASE_SECS", "1".to_owned())];
    let mut app = spawn_app_with(Options {
        worker_env: short_lease.clone(),
        ..Options::default()
    })
    .await;
    let (_, body) = app
        .submit(json!({"script": "import time\n\ndef main():\n    time.sleep(1.5)\n    return 'done'\n"}))
        .await;
    let id = body["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, job) = app.job(&id).await;
        if job["status"] == "running" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job never started: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.kill_worker(0).await;
    app.start_worker(&short_lease);

    let job = app.wait_for_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "done");
    assert_eq!(job["attempt"], 2, "{job}");
}
