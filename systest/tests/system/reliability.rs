//! Cancellation, idempotency, backpressure and graceful worker shutdown.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{spawn_app, spawn_app_with, Options, TestApp};

const SLEEPER: &str = "import time\n\ndef main():\n    print('started', flush=True)\n    time.sleep(30)\n    return 'not cancelled'\n";

fn no_worker() -> Options {
    Options {
        with_worker: false,
        ..Options::default()
    }
}

async fn wait_for_status(app: &TestApp, id: &str, status: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, job) = app.job(id).await;
        if job["status"] == status {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never reached {status}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit_keyed(app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    let response = app
        .post_request("/jobs")
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn cancelling_a_queued_job_makes_it_cancelled_at_once() {
    let app = spawn_app_with(no_worker()).await;
    let (_, body) = app
        .submit(json!({"script": "def main():\n    return 1\n"}))
        .await;
    let id = body["id"].as_str().expect("id");
    let (status, job) = app.post(&format!("/jobs/{id}/cancel"), "").await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["error_kind"], "cancelled");
    let (status, body) = app.post(&format!("/jobs/{id}/cancel"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "already_finished");
    assert_eq!(body["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_a_running_job_kills_its_sandbox_within_a_second() {
    let app = spawn_app().await;
    let (_, body) = app.submit(json!({"script": SLEEPER, "timeout": 60})).await;
    let id = body["id"].as_str().expect("id").to_owned();
    wait_for_status(&app, &id, "running", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, job) = app.delete(&format!("/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "cancelled");

    // The worker has two slots; two jobs at once can only both run if the cancelled
    // sandbox is gone.
    let started = Instant::now();
    let next =
        json!({"script": "import time\n\ndef main():\n    time.sleep(1)\n    return 'next'\n"});
    let (a, b) = futures::join!(app.execute(next.clone()), app.execute(next.clone()));
    for (status, body) in [a, b] {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a slot stayed busy: {:?}",
        started.elapsed()
    );
    let (_, job) = app.job(&id).await;
    assert_eq!(
        job["status"], "cancelled",
        "a late write-back must not revive it: {job}"
    );
    assert_eq!(job["result"], Value::Null);
}

#[tokio::test]
async fn cancelling_a_finished_job_is_a_409_with_its_status() {
    let app = spawn_app().await;
    let (_, body) = app.run("def main():\n    return 1\n").await;
    let id = body["id"].as_str().expect("id");
    let (status, body) = app.post(&format!("/jobs/{id}/cancel"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["status"], "succeeded");
    let (status, body) = app
        .post("/jobs/00000000-0000-4000-8000-000000000000/cancel", "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn same_idempotency_key_and_body_returns_the_same_job() {
    let app = spawn_app_with(no_worker()).await;
    let body = json!({"script": "def main():\n    return 1\n"});
    let (status, first) = submit_keyed(&app, "order-42", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, replay) = submit_keyed(&app, "order-42", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replay}");
    assert_eq!(first["id"], replay["id"]);
    let (_, other) = submit_keyed(&app, "order-43", &body).await;
    assert_ne!(first["id"], other["id"]);
}

#[tokio::test]
async fn same_idempotency_key_with_another_body_is_a_422() {
    let app = spawn_app_with(no_worker()).await;
    let (_, first) =
        submit_keyed(&app, "k", &json!({"script": "def main():\n    return 1\n"})).await;
    let (status, body) =
        submit_keyed(&app, "k", &json!({"script": "def main():\n    return 2\n"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "idempotency_key_reused");
    assert_eq!(body["id"], first["id"]);
}

#[tokio::test]
async fn execute_replays_an_idempotent_request_with_the_same_outcome() {
    let app = spawn_app().await;
    let call = || async {
        let response = app
            .post_request("/execute")
            .header("idempotency-key", "exec-1")
            .json(&json!({"script": "import random\n\ndef main():\n    return random.random()\n"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.expect("json")
    };
    let first = call().await;
    let second = call().await;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        first["result"], second["result"],
        "ran once, answered twice"
    );
}

#[tokio::test]
async fn queue_past_its_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(Options {
        with_worker: false,
        api_env: vec![("MAX_QUEUED_JOBS", "2".to_owned())],
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let (status, _) = app
            .submit(json!({"script": "def main():\n    return 1\n"}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let response = app
        .post_request("/jobs")
        .json(&json!({"script": "def main():\n    return 1\n"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "queue_full");
}

#[tokio::test]
async fn sigterm_to_a_worker_mid_job_releases_it_to_another_worker() {
    let no_grace = vec![("WORKER_SHUTDOWN_GRACE_SECS", "0".to_owned())];
    let mut app = spawn_app_with(Options {
        worker_env: no_grace.clone(),
        ..Options::default()
    })
    .await;
    let script = "import time\n\ndef main():\n    time.sleep(2)\n    return 'finished'\n";
    let (_, body) = app.submit(json!({"script": script})).await;
    let id = body["id"].as_str().expect("id").to_owned();
    wait_for_status(&app, &id, "running", Duration::from_secs(20)).await;

    let exit = app.terminate_worker(0).await;
    assert!(exit.success(), "worker exits 0 after SIGTERM: {exit:?}");
    let (_, job) = app.job(&id).await;
    assert_eq!(job["status"], "queued", "released, not lost: {job}");
    assert_eq!(job["attempt"], 0, "a released run does not count: {job}");

    app.start_worker(&no_grace);
    let job = app.wait_for_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "finished");
    assert_eq!(job["attempt"], 1);
}

#[tokio::test]
async fn request_past_the_server_time_limit_is_a_json_504() {
    let app = spawn_app_with(Options {
        with_worker: false,
        api_env: vec![("REQUEST_TIMEOUT_SECS", "1".to_owned())],
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let (status, body) = app.run("def main():\n    return 1\n").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["code"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_to_the_api_answers_waiting_executes_with_202_and_exits_0() {
    let mut app = spawn_app().await;
    let request = app
        .post_request("/execute")
        .json(&json!({"script": "import time\n\ndef main():\n    time.sleep(2)\n    return 'kept'\n"}))
        .send();
    let waiting = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let exit = app.terminate_api().await;
    assert!(exit.success(), "api exits 0 after SIGTERM: {exit:?}");
    let response = waiting.await.expect("task").expect("answered before exit");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Location header");
    assert!(location.starts_with("/jobs/"), "{location}");
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_shed_on_every_route() {
    let app = spawn_app_with(Options {
        api_env: vec![("MAX_CONCURRENT_REQUESTS", "1".into())],
        ..Options::default()
    })
    .await;
    let held = {
        let request = app.post_request("/execute").json(
            &json!({"script": "import time\ndef main():\n    time.sleep(1.5)\n    return 1\n"}),
        );
        tokio::spawn(async move { request.send().await.expect("sent").status() })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The limit is one for the whole server, not one per route.
    let (status, body) = app.get("/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "overloaded", "{body}");
    assert_eq!(held.await.expect("joined"), StatusCode::OK);
    let (status, _) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}
