//! Tier 1: the HTTP contract, in process. The real router (every middleware included) is
//! driven with `Router::oneshot` on a temporary SQLite file, and an in-process stand-in for
//! the worker finishes jobs with the outcome each script names. No sandbox, no root, no
//! Postgres: every status code, error body and header of the contract, in seconds.
//!
//! A script's outcome is named by a comment: `# outcome: <error kind>` fails the job with that
//! kind, `# outcome: never` leaves it running, anything else succeeds with `# result: <json>`
//! (default `null`). What the sandbox itself does is tested by the system tests.

mod args;
mod auth;
mod errors;
mod jobs;
mod service;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use shared::job::{ClaimedJob, ErrorKind, Failure, Outcome, Output, Usage};
use shared::store::{self, JobStore, Schema, StoreOptions};
use tower::ServiceExt;

const LEASE: Duration = Duration::from_secs(30);

/// The API on a fresh database, with or without a stand-in worker.
pub(crate) struct Contract {
    router: Router,
    pub store: Arc<dyn JobStore>,
    _background: api::BackgroundTasks,
    worker: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Contract {
    fn drop(&mut self) {
        if let Some(worker) = &self.worker {
            worker.abort();
        }
    }
}

/// A response, its body parsed as JSON (`Value::Null` when it is not JSON).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the shape every error has: a JSON body with `error` (for people) and `code`.
    pub(crate) fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert!(
            self.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "an error says what went wrong: {}",
            self.text
        );
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "errors are JSON: {:?}",
            self.headers
        );
    }
}

/// The API with a stand-in worker, on default settings plus `args`.
pub(crate) async fn contract(args: &[&str]) -> Contract {
    start(args, true).await
}

/// The API alone: jobs stay queued.
pub(crate) async fn without_worker(args: &[&str]) -> Contract {
    start(args, false).await
}

async fn start(args: &[&str], with_worker: bool) -> Contract {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let mut argv = vec!["api", "--database-url", url.as_str()];
    argv.extend_from_slice(args);
    let config: api::config::ApiConfig = testkit::settings_without_env(&argv);
    let store = store::connect(
        &url,
        Schema::Migrate,
        &StoreOptions {
            listen_queued: true,
            listen_finished: true,
            ..StoreOptions::default()
        },
    )
    .await
    .expect("open the store");
    let app = api::app(&config, Arc::clone(&store));
    let background = app.start_background();
    let worker = with_worker.then(|| tokio::spawn(stand_in_worker(Arc::clone(&store))));
    Contract {
        router: app.router,
        store,
        _background: background,
        worker,
        _dir: dir,
    }
}

/// Claims jobs as a worker does and finishes each with the outcome its script names.
async fn stand_in_worker(store: Arc<dyn JobStore>) {
    let queued = store.events().map(|events| events.queued);
    loop {
        let claimed = store.claim("stand-in", 8, LEASE).await.unwrap_or_default();
        let finished: Vec<_> = claimed
            .iter()
            .filter_map(|job| Some((job.lease.clone(), named_outcome(job)?)))
            .collect();
        if !finished.is_empty() {
            let _ = store.finish_many(&finished).await;
        }
        if claimed.is_empty() {
            let woken = async {
                match &queued {
                    Some(queued) => queued.notified().await,
                    None => std::future::pending().await,
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(50), woken).await;
        }
    }
}

/// The outcome `job`'s script names; `None` for a job that never ends.
fn named_outcome(job: &ClaimedJob) -> Option<Outcome> {
    let marker = |name: &str| {
        job.script.lines().find_map(|line| {
            line.trim()
                .strip_prefix(&format!("# {name}: "))
                .map(str::to_owned)
        })
    };
    let result = match marker("outcome").as_deref() {
        Some("never") => return None,
        Some(kind) => {
            let kind = ErrorKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .unwrap_or_else(|| panic!("unknown outcome {kind:?}"));
            Err(Failure {
                kind,
                message: format!("the script asked for {}", kind.as_str()),
                position: None,
            })
        }
        None => Ok(
            RawValue::from_string(marker("result").unwrap_or_else(|| "null".into()))
                .expect("the result marker holds JSON"),
        ),
    };
    Some(Outcome {
        result,
        stdout: Output {
            text: marker("stdout").unwrap_or_default(),
            truncated: false,
        },
        stderr: Output::default(),
        usage: Usage {
            wall_ms: Some(1),
            ..Usage::default()
        },
    })
}

impl Contract {
    /// Sends one request through the whole middleware stack.
    pub(crate) async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers every request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the body is readable")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(post(path, body)).await
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(request(Method::GET, path, Body::empty())).await
    }

    /// `POST /execute` of `script` with default limits.
    pub(crate) async fn execute(&self, script: &str) -> Answer {
        self.post("/execute", &json!({ "script": script })).await
    }
}

pub(crate) fn request(method: Method, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a valid request")
}

pub(crate) fn post(path: &str, body: &Value) -> Request<Body> {
    request(Method::POST, path, Body::from(body.to_string()))
}

/// A script that defines `main` and names its outcome.
pub(crate) fn script_with(marker: &str) -> String {
    format!("# {marker}\ndef main():\n    return None\n")
}
