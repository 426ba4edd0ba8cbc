//! Jobs: `/execute`'s answer for every way a job can end, `POST /jobs` and following a job,
//! idempotency, the queue limit and cancellation.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::{contract, request, script_with, without_worker};

#[tokio::test]
async fn execute_answers_200_with_mains_result_and_stdout() {
    let api = contract(&[]).await;
    let answer = api
        .execute("# result: {\"sum\": 3}\n# stdout: hello\ndef main():\n    return 3\n")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["result"], json!({"sum": 3}));
    assert_eq!(answer.body["stdout"], "hello");
    assert_eq!(answer.body["status"], "succeeded");
    assert!(answer.body.get("code").is_none(), "{}", answer.text);
    assert!(answer.body["id"].as_str().is_some_and(|id| id.len() == 36));
}

#[tokio::test]
async fn execute_answers_each_failed_outcome_with_its_status_and_code() {
    let api = contract(&[]).await;
    let cases = [
        ("exception", StatusCode::UNPROCESSABLE_ENTITY, "failed"),
        (
            "result_not_json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "failed",
        ),
        ("exited", StatusCode::UNPROCESSABLE_ENTITY, "failed"),
        ("memory_limit", StatusCode::UNPROCESSABLE_ENTITY, "failed"),
        ("killed", StatusCode::UNPROCESSABLE_ENTITY, "failed"),
        ("output_limit", StatusCode::UNPROCESSABLE_ENTITY, "failed"),
        ("timeout", StatusCode::REQUEST_TIMEOUT, "timed_out"),
        ("syntax_error", StatusCode::BAD_REQUEST, "failed"),
        ("missing_main", StatusCode::BAD_REQUEST, "failed"),
        ("sandbox_error", StatusCode::INTERNAL_SERVER_ERROR, "failed"),
        ("worker_lost", StatusCode::SERVICE_UNAVAILABLE, "failed"),
    ];
    for (kind, status, job_status) in cases {
        let answer = api.execute(&script_with(&format!("outcome: {kind}"))).await;
        assert_eq!(answer.status, status, "{kind}: {}", answer.text);
        assert_eq!(answer.body["code"], kind, "{}", answer.text);
        assert_eq!(answer.body["error_kind"], kind, "{}", answer.text);
        assert_eq!(answer.body["status"], job_status, "{kind}: {}", answer.text);
        assert!(answer.body["error"].is_string(), "{}", answer.text);
        assert!(answer.body["result"].is_null(), "{}", answer.text);
    }
}

#[tokio::test]
async fn execute_that_outlives_its_wait_answers_202_with_the_jobs_location() {
    let api = contract(&["--queue-grace-secs", "0.2"]).await;
    let answer = api
        .post(
            "/execute",
            &json!({"script": script_with("outcome: never"), "timeout": 0.3}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let id = answer.body["id"].as_str().expect("an id");
    assert_eq!(
        answer.header("location"),
        Some(format!("/jobs/{id}").as_str())
    );
    assert_eq!(answer.body["location"], format!("/jobs/{id}"));
    assert_eq!(answer.body["status"], "running");
}

#[tokio::test]
async fn a_submitted_job_is_followed_at_its_location_until_it_finishes() {
    let api = contract(&[]).await;
    let answer = api
        .post("/jobs", &json!({"script": script_with("result: [1, 2]")}))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    let location = answer.header("location").expect("a Location").to_owned();
    assert_eq!(answer.body["location"], location.as_str());
    let followed = api.get(&format!("{location}?wait=5")).await;
    assert_eq!(followed.status, StatusCode::OK, "{}", followed.text);
    assert_eq!(followed.body["status"], "succeeded");
    assert_eq!(followed.body["result"], json!([1, 2]));
    assert_eq!(followed.body["attempt"], 1);
}

#[tokio::test]
async fn a_repeated_idempotency_key_names_the_same_job_and_another_body_is_refused() {
    let api = without_worker(&[]).await;
    let keyed = |script: &str| {
        let mut request = crate::post("/jobs", &json!({ "script": script }));
        request
            .headers_mut()
            .insert("idempotency-key", "order-17".parse().expect("header"));
        request
    };
    let first = api.send(keyed("def main():\n    return 1\n")).await;
    let again = api.send(keyed("def main():\n    return 1\n")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(first.body["id"], again.body["id"]);
    let other = api.send(keyed("def main():\n    return 2\n")).await;
    other.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    assert_eq!(other.body["id"], first.body["id"]);
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_the_figures() {
    let api = without_worker(&["--max-queued-jobs", "1"]).await;
    let body = json!({"script": "def main():\n    return 1\n"});
    assert_eq!(api.post("/jobs", &body).await.status, StatusCode::ACCEPTED);
    for path in ["/jobs", "/execute"] {
        let answer = api.post(path, &body).await;
        answer.assert_error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(answer.body["queued"], 1);
        assert_eq!(answer.body["limit"], 1);
    }
}

#[tokio::test]
async fn cancelling_answers_200_then_409_and_404_for_an_unknown_job() {
    let api = without_worker(&[]).await;
    let answer = api
        .post("/jobs", &json!({"script": "def main():\n    return 1\n"}))
        .await;
    let id = answer.body["id"].as_str().expect("an id").to_owned();
    let cancelled = api
        .send(request(
            Method::POST,
            &format!("/jobs/{id}/cancel"),
            Body::empty(),
        ))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = api
        .send(request(
            Method::DELETE,
            &format!("/jobs/{id}"),
            Body::empty(),
        ))
        .await;
    again.assert_error(StatusCode::CONFLICT, "already_finished");
    assert_eq!(again.body["status"], "cancelled");
    assert_eq!(again.body["id"], id.as_str());
    let unknown = api
        .send(request(
            Method::DELETE,
            &format!("/jobs/{}", uuid::Uuid::new_v4()),
            Body::empty(),
        ))
        .await;
    unknown.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_job_list_filters_by_status_and_refuses_an_unknown_one() {
    let api = contract(&[]).await;
    let done = api.execute("def main():\n    return 1\n").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    let listed = api.get("/jobs?status=succeeded").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let ids: Vec<_> = listed.body["jobs"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|job| job["id"].clone())
        .collect();
    assert_eq!(ids, vec![done.body["id"].clone()]);
    let none = api.get("/jobs?status=queued").await;
    assert_eq!(none.body["jobs"], json!([]), "{}", none.text);
    api.get("/jobs?status=finished")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}
