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

impl Contract {
    /// Stores a key with its own quotas and returns its secret.
    async fn key_with(&self, quotas: QuotaOverrides) -> String {
        let secret = Secret::generate().expect("random");
        self.store
            .create_key(&HashedKey {
                key: ApiKey {
                    id: KeyId::new(),
                    name: "quota".to_owned(),
                    prefix: secret.display_prefix(),
                    admin: false,
                    created_at: Utc::now(),
                    revoked_at: None,
                    quotas,
                },
                hash: secret.hash(),
            })
            .await
            .expect("store the key");
        secret.expose().to_owned()
    }
}

fn assert_quota(answer: &Answer, quota: &str) {
    answer.assert_error(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded");
    assert_eq!(answer.body["quota"], quota, "{}", answer.text);
    assert!(answer.body["quota_limit"].is_number(), "{}", answer.text);
    let retry: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After in seconds: {:?}", answer.headers));
    assert!(retry >= 1, "{retry}");
}

fn job_asking(timeout: f64, memory_mb: u32) -> Value {
    json!({
        "script": "# outcome: never\ndef main():\n    return 1\n",
        "timeout": timeout,
        "memory_mb": memory_mb,
    })
}

#[tokio::test]
async fn a_key_asking_past_its_timeout_or_memory_quota_gets_429_naming_it() {
    let api = without_worker(REQUIRED).await;
    let key = api
        .key_with(QuotaOverrides {
            max_timeout: Some(Duration::from_secs(2)),
            max_memory_mb: Some(128),
            ..QuotaOverrides::default()
        })
        .await;
    let too_long = api
        .as_key(&key, Method::POST, "/jobs", Some(&job_asking(2.5, 128)))
        .await;
    assert_quota(&too_long, "max_timeout");
    assert_eq!(too_long.body["quota_limit"], 2.0);
    let too_big = api
        .as_key(&key, Method::POST, "/execute", Some(&job_asking(2.0, 256)))
        .await;
    assert_quota(&too_big, "max_memory_mb");
    let within = api
        .as_key(&key, Method::POST, "/jobs", Some(&job_asking(2.0, 128)))
        .await;
    assert_eq!(within.status, StatusCode::ACCEPTED, "{}", within.text);
}

#[tokio::test]
async fn the_queued_jobs_quota_trips_and_recovers_when_a_job_leaves_the_queue() {
    let api = without_worker(REQUIRED).await;
    let key = api
        .key_with(QuotaOverrides {
            max_queued: Some(2),
            ..QuotaOverrides::default()
        })
        .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = api
            .as_key(&key, Method::POST, "/jobs", Some(&script()))
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
        ids.push(answer.body["id"].as_str().expect("id").to_owned());
    }
    let third = api
        .as_key(&key, Method::POST, "/jobs", Some(&script()))
        .await;
    assert_quota(&third, "max_queued");
    // Another tenant is not held back by this one's queue.
    let (other, _) = api.key("other", false).await;
    let theirs = api
        .as_key(&other, Method::POST, "/jobs", Some(&script()))
        .await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED, "{}", theirs.text);

    let cancelled = api
        .as_key(&key, Method::DELETE, &format!("/jobs/{}", ids[0]), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    let again = api
        .as_key(&key, Method::POST, "/jobs", Some(&script()))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
}

#[tokio::test]
async fn the_submission_rate_quota_trips_and_recovers_as_its_bucket_refills() {
    let api = without_worker(REQUIRED).await;
    // 120 a minute: a burst of 120, then one every half second.
    let key = api
        .key_with(QuotaOverrides {
            submissions_per_minute: Some(120),
            max_queued: Some(0),
            ..QuotaOverrides::default()
        })
        .await;
    let mut accepted = 0;
    let refused = loop {
        let answer = api
            .as_key(&key, Method::POST, "/jobs", Some(&script()))
            .await;
        if answer.status != StatusCode::ACCEPTED {
            break answer;
        }
        accepted += 1;
        assert!(accepted <= 121, "the rate quota never tripped");
    };
    assert_quota(&refused, "submissions_per_minute");
    assert!((119..=121).contains(&accepted), "{accepted} accepted");
    assert_eq!(refused.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = api
        .as_key(&key, Method::POST, "/jobs", Some(&script()))
        .await;
    assert_eq!(later.status, StatusCode::ACCEPTED, "{}", later.text);
}

#[tokio::test]
async fn server_default_quotas_apply_to_keys_without_their_own_and_never_without_keys() {
    let api = without_worker(&["--auth", "required", "--quota-max-queued", "1"]).await;
    let (key, _) = api.key("default", false).await;
    let first = api
        .as_key(&key, Method::POST, "/jobs", Some(&script()))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let second = api
        .as_key(&key, Method::POST, "/jobs", Some(&script()))
        .await;
    assert_quota(&second, "max_queued");

    let open = without_worker(&["--auth", "off", "--quota-max-queued", "1"]).await;
    for _ in 0..3 {
        let answer = open.post("/jobs", &script()).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    }
}

#[tokio::test]
async fn metrics_can_be_kept_to_admin_keys_whatever_auth_says() {
    for auth in ["required", "off"] {
        let api = without_worker(&["--auth", auth, "--metrics-auth", "admin"]).await;
        let (plain, _) = api.key("plain", false).await;
        let (admin, _) = api.key("ops", true).await;
        let anonymous = api.get("/metrics").await;
        assert_unauthenticated(&anonymous, "metrics without a key");
        let refused = api.as_key(&plain, Method::GET, "/metrics", None).await;
        refused.assert_error(StatusCode::FORBIDDEN, "forbidden");
        let allowed = api.as_key(&admin, Method::GET, "/metrics", None).await;
        assert_eq!(
            allowed.status,
            StatusCode::OK,
            "AUTH={auth}: {}",
            allowed.text
        );
        assert!(
            allowed.text.contains("runbox_tenant_jobs"),
            "{}",
            allowed.text
        );
        assert_eq!(api.get("/health").await.status, StatusCode::OK);
    }
}
