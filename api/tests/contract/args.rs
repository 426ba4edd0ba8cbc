//! `args`: keyword arguments for `main`, checked against its signature before anything is
//! queued, stored and shown exactly as sent.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::{contract, without_worker};

const SIGNATURE: &str = "def main(a, b=2, *, c):\n    return a\n";

#[tokio::test]
async fn args_naming_no_parameter_or_leaving_one_out_are_400_naming_it() {
    let api = without_worker(&[]).await;
    for (args, named) in [
        (json!({"a": 1, "c": 3, "zzz": 4}), "`zzz`"),
        (json!({"a": 1}), "`c`"),
        (json!({"c": 1}), "`a`"),
    ] {
        for path in ["/execute", "/jobs", "/validate"] {
            let answer = api
                .post(path, &json!({"script": SIGNATURE, "args": args}))
                .await;
            answer.assert_error(StatusCode::BAD_REQUEST, "main_signature");
            let message = answer.body["error"].as_str().expect("error");
            assert!(message.contains(named), "{path} {args}: {message}");
        }
    }
    let accepted = api
        .post(
            "/jobs",
            &json!({"script": SIGNATURE, "args": {"a": 1, "c": 3}}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let open = api
        .post(
            "/validate",
            &json!({"script": "def main(**options):\n    return options\n", "args": {"x": 1, "y": [2]}}),
        )
        .await;
    assert_eq!(
        open.status,
        StatusCode::OK,
        "**kwargs takes any name: {}",
        open.text
    );
}

#[tokio::test]
async fn args_that_are_not_an_object_are_400_and_too_large_args_are_413() {
    let api = without_worker(&["--max-args-bytes", "64"]).await;
    for args in [json!([1, 2]), json!("a=1"), json!(7), json!(true)] {
        let answer = api
            .post("/jobs", &json!({"script": SIGNATURE, "args": args}))
            .await;
        answer.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(answer.body["field"], "args", "{}", answer.text);
    }
    let big = api
        .post(
            "/jobs",
            &json!({"script": SIGNATURE, "args": {"a": "x".repeat(64), "c": 1}}),
        )
        .await;
    big.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn the_job_shows_its_args_exactly_as_sent() {
    let api = contract(&[]).await;
    let body = r#"{"script": "def main(n, s, **rest):\n    return 1\n", "args": {"n": 123456789012345678901234567890123, "s": "\u00e9\ud83d\ude00", "deep": {"x": [1.5, null]}}}"#;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/execute")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let answer = api.send(request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(
        answer
            .text
            .contains(r#""args":{"n": 123456789012345678901234567890123, "s": "\u00e9\ud83d\ude00", "deep": {"x": [1.5, null]}}"#),
        "{}",
        answer.text
    );
    let id = answer.body["id"].as_str().expect("id");
    let job = api.get(&format!("/jobs/{id}")).await;
    assert_eq!(job.body["args"]["deep"], json!({"x": [1.5, null]}));
    let plain = api.execute("def main():\n    return 1\n").await;
    assert!(plain.body["args"].is_null(), "{}", plain.text);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_other_args_is_refused() {
    let api = without_worker(&[]).await;
    let submit = |args: serde_json::Value| {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/jobs")
            .header("content-type", "application/json")
            .header("idempotency-key", "with-args")
            .body(Body::from(
                json!({"script": SIGNATURE, "args": args}).to_string(),
            ))
            .expect("request");
        api.send(request)
    };
    let first = submit(json!({"a": 1, "c": 3})).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let same = submit(json!({"a": 1, "c": 3})).await;
    assert_eq!(same.body["id"], first.body["id"]);
    let other = submit(json!({"a": 2, "c": 3})).await;
    other.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
}
