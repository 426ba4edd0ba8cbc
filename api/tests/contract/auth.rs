//! API keys: which routes need one, what a caller without a valid one gets, and that each
//! tenant sees only its own jobs.

use std::time::Duration;

use api::auth::Secret;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use chrono::Utc;
use serde_json::{json, Value};
use shared::tenant::{ApiKey, HashedKey, KeyId, QuotaOverrides};

use crate::{without_worker, Answer, Contract};

const REQUIRED: &[&str] = &["--auth", "required"];

const UNKNOWN_JOB: &str = "0b6f2ba4-5c7e-4d0a-9d53-3f3c1a1f2b11";

impl Contract {
    /// Stores a new key and returns its secret and id.
    async fn key(&self, name: &str, admin: bool) -> (String, KeyId) {
        let secret = Secret::generate().expect("random");
        let id = KeyId::new();
        self.store
            .create_key(&HashedKey {
                key: ApiKey {
                    id,
                    name: name.to_owned(),
                    prefix: secret.display_prefix(),
                    admin,
                    created_at: Utc::now(),
                    revoked_at: None,
                    quotas: QuotaOverrides::default(),
                },
                hash: secret.hash(),
            })
            .await
            .expect("store the key");
        (secret.expose().to_owned(), id)
    }

    async fn as_key(&self, key: &str, method: Method, path: &str, body: Option<&Value>) -> Answer {
        self.send(keyed(method, path, body, Some(&format!("Bearer {key}"))))
            .await
    }
}

fn keyed(
    method: Method,
    path: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a valid request")
}

fn script() -> Value {
    json!({"script": "# outcome: never\ndef main():\n    return 1\n"})
}

/// Every route that touches jobs or scripts, with a body where it takes one.
fn job_routes() -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::POST, "/execute".into(), Some(script())),
        (Method::POST, "/jobs".into(), Some(script())),
        (Method::GET, "/jobs".into(), None),
        (Method::GET, format!("/jobs/{UNKNOWN_JOB}"), None),
        (Method::POST, format!("/jobs/{UNKNOWN_JOB}/cancel"), None),
        (Method::DELETE, format!("/jobs/{UNKNOWN_JOB}"), None),
        (Method::POST, "/validate".into(), Some(script())),
    ]
}

fn assert_unauthenticated(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        answer.text
    );
    answer.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        answer
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{what}: {:?}",
        answer.headers
    );
}

#[tokio::test]
async fn every_job_route_refuses_a_missing_malformed_unknown_or_revoked_key_with_401() {
    let api = without_worker(REQUIRED).await;
    let (revoked, revoked_id) = api.key("gone", false).await;
    api.store.revoke_key(revoked_id).await.expect("revoke");
    let unknown = Secret::generate().expect("random").expose().to_owned();
    let credentials = [
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer not a key".to_owned()),
        Some(unknown),
        Some(format!(
            "Bearer {}",
            Secret::generate().expect("random").expose()
        )),
        Some(format!("Bearer {revoked}")),
    ];
    for (method, path, body) in job_routes() {
        for credential in &credentials {
            let answer = api
                .send(keyed(
                    method.clone(),
                    &path,
                    body.as_ref(),
                    credential.as_deref(),
                ))
                .await;
            assert_unauthenticated(&answer, &format!("{method} {path} with {credential:?}"));
        }
    }
}

#[tokio::test]
async fn health_metrics_docs_and_pages_stay_open_when_keys_are_required() {
    let api = without_worker(REQUIRED).await;
    for path in [
        "/health",
        "/ready",
        "/metrics",
        "/",
        "/docs",
        "/openapi.json",
    ] {
        let answer = api.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
    }
}

#[tokio::test]
async fn a_tenant_cannot_see_wait_on_list_or_cancel_another_tenants_job() {
    let api = without_worker(REQUIRED).await;
    let (a, _) = api.key("a", false).await;
    let (b, _) = api.key("b", false).await;
    let (admin, _) = api.key("ops", true).await;
    let submitted = api.as_key(&a, Method::POST, "/jobs", Some(&script())).await;
    assert_eq!(submitted.status, StatusCode::ACCEPTED, "{}", submitted.text);
    let id = submitted.body["id"].as_str().expect("id").to_owned();
    let path = format!("/jobs/{id}");

    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::GET, format!("{path}?wait=5")),
        (Method::POST, format!("{path}/cancel")),
        (Method::DELETE, path.clone()),
    ] {
        let started = std::time::Instant::now();
        let answer = api.as_key(&b, method.clone(), &path, None).await;
        answer.assert_error(StatusCode::NOT_FOUND, "not_found");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{method} {path} waited on another tenant's job"
        );
    }
    let listed = api.as_key(&b, Method::GET, "/jobs", None).await;
    assert_eq!(listed.body["jobs"], json!([]), "{}", listed.text);

    let own = api.as_key(&a, Method::GET, &path, None).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert_eq!(own.body["status"], "queued");
    let listed = api.as_key(&a, Method::GET, "/jobs", None).await;
    assert_eq!(listed.body["jobs"][0]["id"], id.as_str(), "{}", listed.text);

    let other = api.as_key(&b, Method::POST, "/jobs", Some(&script())).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    let everything = api.as_key(&admin, Method::GET, "/jobs", None).await;
    assert_eq!(
        everything.body["jobs"].as_array().map(Vec::len),
        Some(2),
        "an admin key lists every tenant's jobs: {}",
        everything.text
    );
    let cancelled = api
        .as_key(&admin, Method::POST, &format!("{path}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    let seen = api.as_key(&a, Method::GET, &path, None).await;
    assert_eq!(seen.body["status"], "cancelled");
}

#[tokio::test]
async fn the_same_idempotency_key_names_a_job_per_tenant() {
    let api = without_worker(REQUIRED).await;
    let (a, _) = api.key("a", false).await;
    let (b, _) = api.key("b", false).await;
    let submit = |key: String, script: &'static str| {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/jobs")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header("idempotency-key", "order-7")
            .body(Body::from(json!({ "script": script }).to_string()))
            .expect("a valid request");
        api.send(request)
    };
    let first = submit(a.clone(), "def main():\n    return 1\n").await;
    let other_tenant = submit(b, "def main():\n    return 2\n").await;
    let again = submit(a, "def main():\n    return 1\n").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(
        other_tenant.status,
        StatusCode::ACCEPTED,
        "{}",
        other_tenant.text
    );
    assert_ne!(first.body["id"], other_tenant.body["id"]);
    assert_eq!(again.body["id"], first.body["id"]);
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_a_second() {
    let api = without_worker(REQUIRED).await;
    let (key, id) = api.key("short-lived", false).await;
    let before = api.as_key(&key, Method::GET, "/jobs", None).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    api.store.revoke_key(id).await.expect("revoke");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = api.as_key(&key, Method::GET, "/jobs", None).await;
    assert_unauthenticated(&after, "a revoked key");
}

#[tokio::test]
async fn the_description_declares_the_bearer_scheme_on_job_routes_only_when_required() {
    let api = without_worker(REQUIRED).await;
    let document = api.get("/openapi.json").await.body;
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, method) in [
        ("/execute", "post"),
        ("/jobs", "get"),
        ("/jobs/{id}", "delete"),
    ] {
        let operation = &document["paths"][path][method];
        assert_eq!(
            operation["security"],
            json!([{"bearer": []}]),
            "{method} {path}"
        );
        assert!(operation["responses"]["401"].is_object(), "{method} {path}");
    }
    for path in ["/health", "/ready", "/openapi.json"] {
        assert!(
            document["paths"][path]["get"]["security"].is_null(),
            "{path}"
        );
    }

    let open = without_worker(&["--auth", "off"]).await;
    let document = open.get("/openapi.json").await.body;
    assert!(document["components"]["securitySchemes"].is_null());
    assert!(document["paths"]["/execute"]["post"]["security"].is_null());
}

#[tokio::test]
async fn without_keys_required_a_request_needs_none() {
    let api = without_worker(&[]).await;
    let answer = api.get("/jobs").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}
