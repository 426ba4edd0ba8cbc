//! Webhooks with the real binaries: signed per Standard Webhooks, retried until delivered,
//! kept across an API restart, refused for private targets unless allowed, never redirected.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::app::{spawn_app_with, Options, TestApp};

/// The secret as Standard Webhooks libraries take it, and the key it stands for.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A local webhook receiver: answers 500 to its first `failures` deliveries, then 200; or,
/// with `redirect`, a 302 to `/elsewhere`.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(failures: usize, redirect: bool) -> Self {
        Self::start_on("127.0.0.1:0", failures, redirect).await
    }

    async fn start_on(address: &str, failures: usize, redirect: bool) -> Self {
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = Arc::clone(&received);
        let handler = move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let log = Arc::clone(&log);
            async move {
                let count = {
                    let mut log = log.lock().expect("lock");
                    log.push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body: body.to_vec(),
                    });
                    log.len()
                };
                if redirect {
                    (AxumStatus::FOUND, [("location", "/elsewhere")]).into_response()
                } else if count <= failures {
                    AxumStatus::INTERNAL_SERVER_ERROR.into_response()
                } else {
                    AxumStatus::OK.into_response()
                }
            }
        };
        let router = axum::Router::new().fallback(handler);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url,
            received,
            _server: server,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

fn api_env(allow_private: bool) -> Vec<(&'static str, String)> {
    vec![
        ("WEBHOOK_SECRET", SECRET.to_owned()),
        ("WEBHOOK_ALLOW_PRIVATE", allow_private.to_string()),
    ]
}

async fn app(allow_private: bool) -> TestApp {
    spawn_app_with(Options {
        api_env: api_env(allow_private),
        ..Options::default()
    })
    .await
}

/// Polls the job until its webhook is no longer pending (or `limit` passes).
async fn settled(app: &TestApp, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, job) = app.job(id).await;
        if job["webhook"]["status"] != "pending" || Instant::now() > deadline {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hook(url: &str) -> Value {
    json!({"script": "def main():\n    return 6 * 7\n", "webhook": {"url": url}})
}

#[tokio::test]
async fn a_delivery_is_signed_per_standard_webhooks_and_carries_the_job() {
    let app = app(true).await;
    let receiver = Receiver::start(0, false).await;
    let (status, body) = app.execute(hook(&receiver.url)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["id"].as_str().expect("id");
    let job = settled(&app, id, Duration::from_secs(20)).await;
    assert_eq!(job["webhook"]["status"], "delivered", "{job}");
    assert_eq!(job["webhook"]["attempts"], 1);

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let delivery = &received[0];
    let header = |name: &str| {
        delivery.headers[name]
            .to_str()
            .expect("ascii header")
            .to_owned()
    };
    let (msg_id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    // Verified as the specification says a receiver verifies it.
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(&delivery.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(signature, format!("v1,{expected}"));
    let sent: Value = serde_json::from_slice(&delivery.body).expect("json body");
    assert_eq!(sent["id"], id);
    assert_eq!(sent["status"], "succeeded");
    assert_eq!(sent["result"], 42);
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().expect("seconds");
    assert!((0..60).contains(&age), "timestamp {timestamp}");
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_delivery_on_the_third_try() {
    let app = app(true).await;
    let receiver = Receiver::start(2, false).await;
    let (_, body) = app.execute(hook(&receiver.url)).await;
    let id = body["id"].as_str().expect("id");
    let job = settled(&app, id, Duration::from_secs(30)).await;
    assert_eq!(job["webhook"]["status"], "delivered", "{job}");
    assert_eq!(job["webhook"]["attempts"], 3);
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    let ids: Vec<&str> = received
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().expect("ascii"))
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one id across tries: {ids:?}"
    );
}

#[tokio::test]
async fn deliveries_pending_when_the_api_stops_are_sent_after_it_starts_again() {
    let mut app = app(true).await;
    // Nothing listens at the target yet: every try fails and the delivery stays pending.
    let port = crate::app::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (_, body) = app.execute(hook(&url)).await;
    let id = body["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, job) = app.job(&id).await;
    assert_eq!(job["webhook"]["status"], "pending", "{job}");
    assert!(job["webhook"]["last_error"].is_string(), "{job}");
    assert!(app.terminate_api().await.success());

    let receiver = Receiver::start_on(&format!("127.0.0.1:{port}"), 0, false).await;
    let restarted = app.start_another_api(&api_env(true)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the restarted API never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job: Value = app
        .client
        .get(format!("{}/jobs/{id}", restarted.base))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(receiver.received()[0].path, "/hook");
    assert!(job["webhook"]["attempts"].as_u64() >= Some(2), "{job}");
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let app = app(false).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://[::1]/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        for path in ["/jobs", "/execute"] {
            let (status, body) = app.post(path, hook(url).to_string()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {url}: {body}");
            assert_eq!(body["field"], "webhook", "{body}");
        }
    }
    let (status, body) = app
        .post(
            "/jobs",
            json!({"script": "def main():\n    return 1\n", "webhook": "http://x"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let allowed = self::app(true).await;
    let (status, body) = allowed.submit(hook("http://127.0.0.1:9/hook")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn webhooks_are_refused_by_a_server_without_a_secret() {
    let app = spawn_app_with(Options::default()).await;
    let (status, body) = app.submit(hook("https://example.com/hook")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("WEBHOOK_SECRET")),
        "{body}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let app = app(true).await;
    let receiver = Receiver::start(0, true).await;
    let (_, body) = app.execute(hook(&receiver.url)).await;
    let id = body["id"].as_str().expect("id");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, job) = app.job(id).await;
    assert_eq!(job["webhook"]["status"], "pending", "{job}");
    assert!(
        job["webhook"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("redirect")),
        "{job}"
    );
    let received = receiver.received();
    assert!(!received.is_empty());
    assert!(
        received.iter().all(|r| r.path == "/hook"),
        "the redirect target was never asked: {:?}",
        received.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}
