//! Every way a request is refused: its status, its `code` and the fields that come with it.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::{request, without_worker};

/// One refused request and what it must be answered with.
struct Refusal {
    what: &'static str,
    request: fn() -> Request<Body>,
    status: StatusCode,
    code: &'static str,
    /// Fields the error body must hold, with their values.
    fields: Value,
}

fn execute(body: &Value) -> Request<Body> {
    crate::post("/execute", body)
}

fn refusals() -> Vec<Refusal> {
    vec![
        Refusal {
            what: "a body that is not JSON",
            request: || request(Method::POST, "/execute", Body::from("{not json")),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_json",
            fields: json!({}),
        },
        Refusal {
            what: "no script",
            request: || execute(&json!({"timeout": 1})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            fields: json!({"field": "script"}),
        },
        Refusal {
            what: "a timeout past the limit",
            request: || execute(&json!({"script": "def main():\n    return 1\n", "timeout": 3600})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            fields: json!({"field": "timeout"}),
        },
        Refusal {
            what: "memory below the minimum",
            request: || execute(&json!({"script": "def main():\n    return 1\n", "memory_mb": 1})),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            fields: json!({"field": "memory_mb"}),
        },
        Refusal {
            what: "a syntax error",
            request: || execute(&json!({"script": "def main(:\n    return 1\n"})),
            status: StatusCode::BAD_REQUEST,
            code: "syntax_error",
            fields: json!({"line": 1}),
        },
        Refusal {
            what: "no main",
            request: || execute(&json!({"script": "def helper():\n    return 1\n"})),
            status: StatusCode::BAD_REQUEST,
            code: "missing_main",
            fields: json!({}),
        },
        Refusal {
            what: "a script past the size limit",
            request: || {
                execute(
                    &json!({"script": format!("def main():\n    return 1\n#{}", "x".repeat(300))}),
                )
            },
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            fields: json!({"limit_bytes": 256}),
        },
        Refusal {
            what: "an empty idempotency key",
            request: || {
                let mut request = execute(&json!({"script": "def main():\n    return 1\n"}));
                request
                    .headers_mut()
                    .insert("idempotency-key", "".parse().expect("header"));
                request
            },
            status: StatusCode::BAD_REQUEST,
            code: "invalid_idempotency_key",
            fields: json!({}),
        },
        Refusal {
            what: "a job id that is not a UUID",
            request: || request(Method::GET, "/jobs/not-a-uuid", Body::empty()),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_job_id",
            fields: json!({}),
        },
        Refusal {
            what: "an unknown job",
            request: || {
                request(
                    Method::GET,
                    &format!("/jobs/{}", uuid::Uuid::new_v4()),
                    Body::empty(),
                )
            },
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            fields: json!({}),
        },
        Refusal {
            what: "an unknown route",
            request: || request(Method::GET, "/nowhere", Body::empty()),
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            fields: json!({}),
        },
        Refusal {
            what: "a method the route does not take",
            request: || request(Method::PUT, "/execute", Body::empty()),
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            fields: json!({}),
        },
        Refusal {
            what: "an unknown status filter",
            request: || request(Method::GET, "/jobs?status=done", Body::empty()),
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            fields: json!({}),
        },
    ]
}

#[tokio::test]
async fn every_refused_request_gets_its_status_code_and_fields() {
    let api = without_worker(&["--max-script-bytes", "256"]).await;
    for refusal in refusals() {
        let answer = api.send((refusal.request)()).await;
        assert_eq!(
            answer.status, refusal.status,
            "{}: {}",
            refusal.what, answer.text
        );
        answer.assert_error(refusal.status, refusal.code);
        for (field, value) in refusal.fields.as_object().expect("an object") {
            assert_eq!(
                &answer.body[field], value,
                "{}: field {field}: {}",
                refusal.what, answer.text
            );
        }
    }
    // Nothing refused was queued.
    let listed = api.get("/jobs").await;
    assert_eq!(listed.body["jobs"], json!([]), "{}", listed.text);
}

#[tokio::test]
async fn validate_refuses_what_execute_refuses_with_the_same_answer() {
    let api = without_worker(&[]).await;
    for script in [
        "def main(:\n    pass\n",
        "def helper():\n    pass\n",
        "main = 1\n",
    ] {
        let body = json!({ "script": script });
        let validated = api.post("/validate", &body).await;
        let executed = api.post("/execute", &body).await;
        assert_eq!(
            validated.status,
            StatusCode::BAD_REQUEST,
            "{}",
            validated.text
        );
        assert_eq!(validated.status, executed.status);
        assert_eq!(validated.body, executed.body);
    }
}

#[tokio::test]
async fn a_body_past_the_limit_is_refused_unread_with_413() {
    let api = without_worker(&["--max-script-bytes", "256"]).await;
    let huge = Request::builder()
        .method(Method::POST)
        .uri("/execute")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(vec![b' '; 1 << 20]))
        .expect("request");
    api.send(huge)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}
