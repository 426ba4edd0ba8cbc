//! `GET /jobs`: newest first, filtered by status, paged by cursor.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{spawn_app, spawn_app_with, Options, TestApp};

async fn submit(app: &TestApp, script: &str) -> String {
    let (status, body) = app.submit(json!({ "script": script })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .expect("jobs array")
        .iter()
        .map(|job| job["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn jobs_are_listed_newest_first_one_page_at_a_time() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    let mut submitted = Vec::new();
    for i in 0..5 {
        submitted.push(submit(&app, &format!("def main():\n    return {i}\n")).await);
    }
    submitted.reverse();

    let (status, first) = app.get("/jobs?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), submitted[..2].to_vec());
    let job = &first["jobs"][0];
    assert_eq!(job["status"], "queued");
    assert_eq!(job["timeout"], 10.0);
    assert_eq!(job["memory_mb"], 256);
    assert!(
        job["created_at"].is_string() && job["request_id"].is_string(),
        "{job}"
    );
    for heavy in ["script", "result", "stdout", "stderr"] {
        assert!(
            job.get(heavy).is_none(),
            "the list leaves out {heavy}: {job}"
        );
    }

    let mut listed = ids(&first);
    let mut cursor = first["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_owned();
    loop {
        let (status, page) = app.get(&format!("/jobs?limit=2&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        listed.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(listed, submitted, "every job once, newest first");

    let (_, all) = app.get("/jobs").await;
    assert_eq!(ids(&all), submitted, "default page holds up to 20");
    assert_eq!(all["next_cursor"], Value::Null);
}

#[tokio::test]
async fn jobs_are_filtered_by_status() {
    let app = spawn_app().await;
    let (status, ok) = app.run("def main():\n    return 1\n").await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    let (status, failed) = app.run("def main():\n    raise ValueError('no')\n").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{failed}");

    let (_, succeeded) = app.get("/jobs?status=succeeded").await;
    assert_eq!(ids(&succeeded), vec![ok["id"].as_str().expect("id")]);
    let job = &succeeded["jobs"][0];
    assert!(job["duration_ms"].is_u64(), "{job}");
    assert!(
        job["finished_at"].is_string() && job["worker_id"].is_string(),
        "{job}"
    );
    assert_eq!(job["error_kind"], Value::Null);

    let (_, failures) = app.get("/jobs?status=failed").await;
    assert_eq!(ids(&failures), vec![failed["id"].as_str().expect("id")]);
    assert_eq!(failures["jobs"][0]["error_kind"], "exception");

    let (_, queued) = app.get("/jobs?status=queued").await;
    assert_eq!(queued["jobs"], json!([]));
    assert_eq!(queued["next_cursor"], Value::Null);
}

#[tokio::test]
async fn bad_list_parameters_are_named_in_a_400() {
    let app = spawn_app_with(Options {
        with_worker: false,
        ..Options::default()
    })
    .await;
    for (query, field) in [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=123_00000000000000000000000000000000zz", "cursor"),
    ] {
        let (status, body) = app.get(&format!("/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["code"], "invalid_request", "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn a_listing_sees_submitted_jobs_move_to_their_final_status() {
    let app = spawn_app().await;
    let id = submit(&app, "def main():\n    return 'done'\n").await;
    app.wait_for_terminal(&id, Duration::from_secs(30)).await;
    let (_, page) = app.get("/jobs?limit=1").await;
    assert_eq!(ids(&page), vec![id.clone()]);
    assert_eq!(page["jobs"][0]["status"], "succeeded");
    let statuses: HashSet<&str> = page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|job| job["status"].as_str())
        .collect();
    assert_eq!(statuses, HashSet::from(["succeeded"]));
}
