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
    keyed_at(app, &app.base, key, path, body).await
}

/// A request to the API at `base` (the app's own, or another process on its database).
async fn keyed_at(
    app: &TestApp,
    base: &str,
    key: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{base}{path}");
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
        api_keys: vec!["--name alice", "--name ops --admin"],
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

#[tokio::test]
async fn quotas_hold_across_two_api_processes() {
    let app = spawn_app_with(Options {
        with_worker: false,
        api_env: vec![("AUTH", "required".to_owned())],
        api_keys: vec![
            "--name rate --submissions-per-minute 6 --max-queued 0",
            "--name queue --max-queued 4",
        ],
        ..Options::default()
    })
    .await;
    let other = app
        .start_another_api(&[("AUTH", "required".to_owned())])
        .await;
    let script = json!({"script": "def main():\n    return 1\n"});
    for (key, quota, allowed) in [
        (&app.keys[0], "submissions_per_minute", 6),
        (&app.keys[1], "max_queued", 4),
    ] {
        let mut accepted = 0;
        for i in 0..10 {
            let base = if i % 2 == 0 { &app.base } else { &other.base };
            let (status, body) =
                keyed_at(&app, base, Some(key), "/jobs", Some(script.clone())).await;
            match status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["quota"], quota, "{body}"),
                other => panic!("{other}: {body}"),
            }
        }
        assert_eq!(accepted, allowed, "{quota} over two API processes");
    }
}

/// Tenant A fills the queue with 500 jobs, then tenant B submits one: B's job starts as soon
/// as a slot frees, not after A's jobs.
#[tokio::test]
async fn a_tenants_single_job_is_not_stuck_behind_another_tenants_500() {
    const RUN_SECS: f64 = 0.5;
    let app = spawn_app_with(Options {
        api_env: vec![("AUTH", "required".to_owned())],
        api_keys: vec!["--name a", "--name b"],
        ..Options::default()
    })
    .await;
    let (a, b) = (app.keys[0].as_str(), app.keys[1].as_str());
    let script =
        json!({"script": format!("import time\n\ndef main():\n    time.sleep({RUN_SECS})\n")});
    for _ in 0..500 {
        let (status, body) = keyed(&app, Some(a), "/jobs", Some(script.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, body) = keyed(
        &app,
        Some(b),
        "/execute",
        Some(json!({"script": "def main():\n    return 'b'\n"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(body[field].as_str().expect(field)).expect(field)
    };
    let waited = (at("started_at") - at("created_at")).as_seconds_f64();
    let (_, a_jobs) = keyed(&app, Some(a), "/jobs?status=queued&limit=100", None).await;
    eprintln!(
        "fair queuing ({:?}): B's job waited {waited:.3} s behind A's 500 (each {RUN_SECS} s, \
         2 slots); {}+ of A's still queued",
        app.backend,
        a_jobs["jobs"].as_array().map_or(0, Vec::len)
    );
    assert!(
        waited <= RUN_SECS + 0.5,
        "B waited {waited:.3} s, more than one job's run ({RUN_SECS} s) per slot"
    );
}
