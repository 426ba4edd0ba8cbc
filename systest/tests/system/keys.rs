//! API keys with the real binaries: made, listed and revoked with `api keys`, required by an
//! API that listens with `AUTH=required`, and never written to a log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{api_command, bin_dir, free_port, spawn_app_with, Options, TestApp};

async fn keyed(
    app: &TestApp,
    key: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", app.base);
    let mut request = match &body {
        Some(body) => app.client.post(url).json(body),
        None => app.client.get(url),
    };
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_refuses_to_start_with_keys_required_and_no_key_in_the_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(bin_dir().join("api"))
            .env_clear()
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("jobs.db").display()),
            )
            .env("HOST", "0.0.0.0")
            .env("PORT", free_port().to_string())
            .output(),
    )
    .await
    .expect("the API exits instead of serving")
    .expect("run api");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("api keys create --name admin --admin"),
        "the refusal says how to make a key: {stderr}"
    );
}

#[tokio::test]
async fn keys_made_on_the_command_line_open_the_api_until_revoked_and_never_reach_the_logs() {
    let app = spawn_app_with(Options {
        api_env: vec![("AUTH", "required".to_owned())],
        api_keys: vec![("alice", false), ("ops", true)],
        capture_logs: true,
        ..Options::default()
    })
    .await;
    let (alice, ops) = (app.keys[0].as_str(), app.keys[1].as_str());
    assert!(alice.starts_with("rbx_") && alice.len() == 47, "{alice}");

    let script = json!({"script": "def main():\n    return 6 * 7\n"});
    let (status, body) = keyed(&app, None, "/execute", Some(script.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "unauthenticated");
    let (status, body) = keyed(&app, Some(alice), "/execute", Some(script.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], 42);
    let job_path = format!("/jobs/{}", body["id"].as_str().expect("id"));
    let (status, _) = keyed(&app, Some(ops), &job_path, None).await;
    assert_eq!(status, StatusCode::OK, "an admin key sees alice's job");

    let listed = api_command(&app.database_url, &["keys", "list"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8(listed.stdout).expect("utf-8");
    let alice_line = listed
        .lines()
        .find(|line| line.ends_with("alice"))
        .unwrap_or_else(|| panic!("alice is listed: {listed}"));
    assert!(
        alice_line.contains(&alice[..12]),
        "the list shows a prefix: {listed}"
    );
    assert!(
        !listed.contains(alice) && !listed.contains(ops),
        "the list never shows a secret"
    );
    let alice_id = alice_line.split_whitespace().next().expect("an id column");

    let revoked = api_command(&app.database_url, &["keys", "revoke", alice_id]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    let unknown = api_command(&app.database_url, &["keys", "revoke", "not-an-id"]).await;
    assert!(!unknown.status.success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = keyed(&app, Some(alice), &job_path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked key: {body}");
    let (status, _) = keyed(&app, Some(ops), &job_path, None).await;
    assert_eq!(status, StatusCode::OK, "the other key still works");

    for process in ["api", "worker-000"] {
        let log = app.process_log(process);
        assert!(!log.is_empty(), "{process} logged");
        for secret in [alice, ops] {
            assert!(!log.contains(secret), "{process} logged a key");
            assert!(!log.contains(&secret[4..]), "{process} logged a key's body");
        }
    }
}
