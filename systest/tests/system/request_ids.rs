//! `x-request-id`: generated when absent, echoed in the response, stored with the job and
//! carried into the API's and the worker's log lines for it; scripts never reach the logs.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{spawn_app_with, Options};

fn header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn request_id_is_generated_returned_and_stored_with_the_job() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let script = json!({"script": "def main():\n    return 1\n"});

    let response = app
        .post_request("/jobs")
        .json(&script)
        .send()
        .await
        .expect("sent");
    let generated = header(&response).expect("a request id is generated");
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let body: Value = response.json().await.expect("json");
    let (_, job) = app.job(body["id"].as_str().expect("id")).await;
    assert_eq!(job["request_id"], generated.as_str());

    let response = app
        .post_request("/jobs")
        .header("x-request-id", "checkout-7f3a")
        .json(&script)
        .send()
        .await
        .expect("sent");
    assert_eq!(header(&response).as_deref(), Some("checkout-7f3a"));
    let body: Value = response.json().await.expect("json");
    let (_, job) = app.job(body["id"].as_str().expect("id")).await;
    assert_eq!(job["request_id"], "checkout-7f3a");

    // Errors carry it too.
    let response = app
        .client
        .get(format!("{}/jobs/nope", app.base))
        .header("x-request-id", "lookup-1")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&response).as_deref(), Some("lookup-1"));
}

#[tokio::test]
async fn unusable_client_request_ids_are_replaced() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    for bad in ["x".repeat(129), "has space".to_owned(), String::new()] {
        let response = app
            .client
            .get(format!("{}/health", app.base))
            .header("x-request-id", &bad)
            .send()
            .await
            .expect("sent");
        let id = header(&response).expect("request id");
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{bad:?} replaced by {id}"
        );
    }
}

#[tokio::test]
async fn request_id_ties_the_request_log_to_the_workers_job_logs() {
    let app = spawn_app_with(Options {
        capture_logs: true,
        ..Options::default()
    })
    .await;
    let marker = "do-not-log-3c1e";
    let response = app
        .post_request("/execute")
        .header("x-request-id", "trace-5d2b")
        .json(&json!({
            "script": format!("# {marker}\ndef main():\n    print('{marker}')\n    return '{marker}'\n")
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let job: Value = response.json().await.expect("json");
    let job_id = job["id"].as_str().expect("id").to_owned();

    let message = |line: &Value| line["fields"]["message"].as_str().unwrap_or("").to_owned();
    let mentions = |line: &Value, text: &str| line.to_string().contains(text);
    // The worker's write-back is logged just after the answer; give it a moment.
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = app.log_lines();
        if lines.iter().any(|l| message(l) == "job finished") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let with_id: Vec<String> = lines
        .iter()
        .filter(|l| mentions(l, "trace-5d2b"))
        .map(message)
        .collect();
    for expected in [
        "job queued",
        "finished processing request",
        "job started",
        "job finished",
    ] {
        assert!(
            with_id.iter().any(|m| m == expected),
            "no {expected:?} line with the request id; lines with it: {with_id:?}"
        );
    }
    let finished = lines
        .iter()
        .find(|l| message(l) == "job finished")
        .expect("job finished line");
    assert!(mentions(finished, &job_id), "{finished}");
    assert_eq!(finished["fields"]["status"], "succeeded", "{finished}");
    let request = lines
        .iter()
        .find(|l| message(l) == "finished processing request" && mentions(l, "trace-5d2b"))
        .expect("request line");
    assert_eq!(request["fields"]["status"], 200, "{request}");
    assert!(request["fields"]["latency"].is_string(), "{request}");

    let leaked: Vec<&Value> = lines.iter().filter(|l| mentions(l, marker)).collect();
    assert!(
        leaked.is_empty(),
        "script contents reached the logs: {leaked:?}"
    );
}
