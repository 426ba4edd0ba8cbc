//! `POST /validate`: the checks `/execute` makes, without running anything.

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{spawn_app_with, Options};

fn no_worker() -> Options {
    Options {
        with_worker: false,
        ..Options::default()
    }
}

#[tokio::test]
async fn valid_scripts_report_which_main_they_define() {
    let app = spawn_app_with(no_worker()).await;
    let (status, body) = app
        .validate(json!({"script": "def main(limit=3):\n    return limit\n"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"ok": true, "main": "def"}));
    let (status, body) = app
        .validate(json!({"script": "async def main():\n    return 1\n"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"ok": true, "main": "async def"}));
}

#[tokio::test]
async fn invalid_scripts_get_the_same_400_as_execute() {
    let app = spawn_app_with(no_worker()).await;
    for script in ["def main(:\n    pass\n", "def helper():\n    pass\n"] {
        let (validate_status, validate_body) = app.validate(json!({"script": script})).await;
        let (execute_status, execute_body) = app.run(script).await;
        assert_eq!(validate_status, StatusCode::BAD_REQUEST);
        assert_eq!(validate_status, execute_status);
        assert_eq!(validate_body, execute_body);
    }
}
