//! `GET /jobs/<id>/events` with the real worker: output arrives while the job runs, a
//! reconnect with `Last-Event-ID` continues exactly, and a chatty script stays cheap for the
//! store.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{spawn_app, TestApp};

/// One server-sent event, and when it arrived.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    event: String,
    data: Value,
    at: Instant,
}

/// Reads the job's events until the stream ends or `stop_after` events came.
async fn follow(
    app: &TestApp,
    id: &str,
    last_event_id: Option<&str>,
    stop_after: usize,
) -> Vec<Sent> {
    let mut request = app.client.get(format!("{}/jobs/{id}/events", app.base));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let mut response = request.send().await.expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream")));
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Some(bytes) = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .expect("the stream moves")
        .expect("readable")
    {
        buffer.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .filter_map(|line| line.strip_prefix(name))
                    .map(|v| v.strip_prefix(' ').unwrap_or(v))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if field("data:").is_empty() {
                continue; // a keep-alive comment
            }
            events.push(Sent {
                id: field("id:"),
                event: field("event:"),
                data: serde_json::from_str(&field("data:")).expect("data is JSON"),
                at: Instant::now(),
            });
            if events.len() == stop_after {
                return events;
            }
        }
    }
    events
}

fn printed(events: &[Sent]) -> String {
    events
        .iter()
        .filter(|e| e.event == "output")
        .map(|e| e.data["text"].as_str().expect("text"))
        .collect()
}

const TICKER: &str = "import time\n\ndef main():\n    for i in range(10):\n        \
    print(f'line {i}')\n        time.sleep(0.2)\n    return 'done'\n";

#[tokio::test]
async fn a_running_jobs_lines_arrive_as_they_are_printed() {
    let app = spawn_app().await;
    let (status, body) = app.submit(json!({ "script": TICKER })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id");
    let events = follow(&app, id, None, usize::MAX).await;

    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"status"));
    assert_eq!(events[0].data["status"], "queued");
    let end = events.last().expect("events");
    assert_eq!(end.data["status"], "succeeded", "{:?}", end.data);
    assert_eq!(end.data["result"], "done");
    let expected: String = (0..10).map(|i| format!("line {i}\n")).collect();
    assert_eq!(printed(&events), expected);
    assert_eq!(end.data["stdout"], expected.as_str());

    // Seen while the job ran: the first line came well before the end, and the lines came
    // spread over the run, not all at once.
    let outputs: Vec<&Sent> = events.iter().filter(|e| e.event == "output").collect();
    assert!(outputs.len() >= 4, "{} output events", outputs.len());
    let first = outputs[0].at;
    assert!(
        end.at.duration_since(first) >= Duration::from_millis(1200),
        "the first line came {:?} before the end",
        end.at.duration_since(first)
    );
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "every event has an id of its own");
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let app = spawn_app().await;
    let (_, body) = app.submit(json!({ "script": TICKER })).await;
    let id = body["id"].as_str().expect("id");
    let before = follow(&app, id, None, 5).await;
    assert_eq!(before.len(), 5);
    let last = before.last().expect("events").id.clone();
    let after = follow(&app, id, Some(&last), usize::MAX).await;
    let all: Vec<Sent> = before.iter().chain(after.iter()).cloned().collect();
    let expected: String = (0..10).map(|i| format!("line {i}\n")).collect();
    assert_eq!(printed(&all), expected);
    let statuses: Vec<&str> = all
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.data["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["queued", "running", "succeeded"]);

    // After the end, a reconnect gets nothing and the stream closes.
    let end = all.last().expect("events").id.clone();
    assert!(follow(&app, id, Some(&end), usize::MAX).await.is_empty());
}

#[tokio::test]
async fn a_ten_megabyte_printer_costs_the_store_a_few_writes_a_second() {
    let app = spawn_app().await;
    // 10 MB and more, in 64 KiB lines, printed over about 1.5 s.
    let script = "import time\n\ndef main():\n    line = 'x' * 65535\n    \
        for _ in range(160):\n        print(line)\n        time.sleep(0.01)\n    return 1\n";
    let (_, body) = app.submit(json!({ "script": script })).await;
    let id = body["id"].as_str().expect("id");
    let events = follow(&app, id, None, usize::MAX).await;
    let end = events.last().expect("events");
    assert_eq!(end.data["status"], "succeeded", "{:?}", end.data);
    assert_eq!(end.data["stdout_truncated"], true);
    let streamed = printed(&events);
    let kept = end.data["stdout"].as_str().expect("stdout");
    assert_eq!(
        streamed, kept,
        "the stream carries what the job kept, no more"
    );
    let outputs = events.iter().filter(|e| e.event == "output").count();
    let wall_ms = end.data["duration_ms"].as_u64().unwrap_or(0).max(1);
    eprintln!(
        "events: a 10 MB printer ran {wall_ms} ms; its output took {outputs} store writes \
         ({:.1} a second, {} bytes kept)",
        outputs as f64 * 1000.0 / wall_ms as f64,
        kept.len()
    );
    assert!(
        outputs as u64 <= wall_ms / 200 + 3,
        "{outputs} chunks in {wall_ms} ms: more than one write per 200 ms"
    );
}

#[tokio::test]
async fn following_an_unknown_or_malformed_job_is_an_error() {
    let app = spawn_app().await;
    let (status, body) = app
        .get("/jobs/0b6f2ba4-5c7e-4d0a-9d53-3f3c1a1f2b11/events")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = app.get("/jobs/nope/events").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_stopping_api_ends_its_streams_at_once() {
    let mut app = spawn_app().await;
    let script = "import time\n\ndef main():\n    time.sleep(20)\n";
    let (_, body) = app.submit(json!({ "script": script, "timeout": 30 })).await;
    let id = body["id"].as_str().expect("id").to_owned();
    let response = app
        .client
        .get(format!("{}/jobs/{id}/events", app.base))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let reading = tokio::spawn(async move { response.text().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let exit = app.terminate_api().await;
    assert!(exit.success(), "{exit:?}");
    let text = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("the stream ended")
        .expect("joined");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    let text = text.unwrap_or_default();
    assert!(text.contains("\"queued\""), "{text}");
    assert!(!text.contains("succeeded"), "{text}");
}
