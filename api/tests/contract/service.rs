//! What every answer carries (request ids, JSON), and the service's own routes.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::{contract, request, without_worker};

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_usable_one_is_kept() {
    let api = contract(&[]).await;
    let fresh = api.get("/health").await;
    assert!(
        fresh
            .header("x-request-id")
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
        "{:?}",
        fresh.headers
    );
    let mut mine = crate::post(
        "/execute",
        &json!({"script": "def main():\n    return 1\n"}),
    );
    mine.headers_mut()
        .insert("x-request-id", "client-42".parse().expect("header"));
    let kept = api.send(mine).await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.text);
    assert_eq!(kept.header("x-request-id"), Some("client-42"));
    assert_eq!(kept.body["request_id"], "client-42");
    let mut unusable = request(Method::GET, "/health", Body::empty());
    unusable
        .headers_mut()
        .insert("x-request-id", "has space".parse().expect("header"));
    let replaced = api.send(unusable).await;
    assert_ne!(replaced.header("x-request-id"), Some("has space"));
    assert!(replaced.header("x-request-id").is_some());
}

#[tokio::test]
async fn health_ready_metrics_and_the_api_description_answer() {
    let api = without_worker(&[]).await;
    for (path, status) in [("/health", "ok"), ("/ready", "ready")] {
        let answer = api.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        assert_eq!(answer.body["status"], status, "{path}: {}", answer.text);
    }
    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text.contains("# TYPE"), "{}", metrics.text);
    let document = api.get("/openapi.json").await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.body["openapi"].is_string(), "{}", document.text);
    assert!(document.body["paths"]["/execute"]["post"].is_object());
    let docs = api.get("/docs").await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
}

#[tokio::test]
async fn validate_reports_mains_kind_without_running_anything() {
    let api = without_worker(&[]).await;
    let answer = api
        .post(
            "/validate",
            &json!({"script": "async def main():\n    return 1\n"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body, json!({"ok": true, "main": "async def"}));
    let queued = api.get("/jobs").await;
    assert_eq!(queued.body["jobs"], json!([]), "{}", queued.text);
}

#[tokio::test]
async fn past_the_concurrent_request_limit_requests_are_shed_with_503() {
    let api = std::sync::Arc::new(contract(&["--max-concurrent-requests", "1"]).await);
    let waiting = {
        let api = std::sync::Arc::clone(&api);
        tokio::spawn(async move {
            api.post(
                "/execute",
                &json!({"script": crate::script_with("outcome: never"), "timeout": 2}),
            )
            .await
        })
    };
    // The waiting request holds the one place once its job is queued.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let shed = loop {
        let answer = api.get("/health").await;
        if answer.status != StatusCode::OK {
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing was shed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    shed.assert_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    waiting.abort();
}
