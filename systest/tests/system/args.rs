//! `args` through the real sandbox: `main(**args)` gets exactly what the client sent.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::spawn_app;

#[tokio::test]
async fn main_gets_nested_values_big_integers_and_unicode_exactly() {
    let app = spawn_app().await;
    let script = "def main(n, s, nested, **rest):\n    \
        return {'n': n + 1, 's': s, 'chars': len(s), 'nested': nested, \
        'rest': sorted(rest), 'type': type(n).__name__}\n";
    let body = format!(
        r#"{{"script": {}, "args": {{"n": 123456789012345678901234567890123, "s": "\u00e9\ud83d\ude00\u0000", "nested": {{"x": [1.5, null, true], "y": {{}}}}, "extra": 1}}}}"#,
        serde_json::to_string(script).expect("json")
    );
    let response = app
        .post_request("/execute")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(
        text.contains("123456789012345678901234567890124"),
        "the big integer arrives and returns exactly: {text}"
    );
    let answer: Value = serde_json::from_str(&text).expect("json");
    let result = &answer["result"];
    assert_eq!(result["s"], "\u{e9}\u{1F600}\u{0}");
    assert_eq!(result["chars"], 3);
    assert_eq!(result["type"], "int");
    assert_eq!(result["nested"], json!({"x": [1.5, null, true], "y": {}}));
    assert_eq!(result["rest"], json!(["extra"]));
    assert!(
        text.contains(r#""args":{"n": 123456789012345678901234567890123"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_default_is_used_when_args_leave_it_out() {
    let app = spawn_app().await;
    let (status, body) = app
        .execute(json!({
            "script": "async def main(a, b=10):\n    return a * b\n",
            "args": {"a": 4},
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], 40);
}
