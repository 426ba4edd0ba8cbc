//! The API's Prometheus metrics: HTTP requests by route, submissions, validation, and the jobs
//! table counted by status at scrape time, served at `GET /metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::PrometheusHandle;
use pycheck::Diagnostic;
use shared::job::JobStatus;
use shared::metrics::Buckets;
use shared::store::{JobStore, TenantLoad};
use tokio::sync::Mutex;

const HTTP_REQUESTS: &str = "runbox_http_requests_total";
const HTTP_DURATION: &str = "runbox_http_request_duration_seconds";
const JOBS_SUBMITTED: &str = "runbox_jobs_submitted_total";
const REQUESTS_REJECTED: &str = "runbox_requests_rejected_total";
const VALIDATION_DURATION: &str = "runbox_validation_duration_seconds";
const VALIDATION_REJECTED: &str = "runbox_validation_rejected_total";
const JOBS: &str = "runbox_jobs";
const JOBS_COUNT_UP: &str = "runbox_jobs_count_up";
const TENANT_JOBS: &str = "runbox_tenant_jobs";

/// `/execute` holds its request until the job ends (timeout + grace, up to 90 s), and every
/// request is cut at `REQUEST_TIMEOUT_SECS` (120 s by default).
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Parsing takes well under a millisecond for most scripts and is bounded by the 256 KiB
/// script limit.
const VALIDATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

const HISTOGRAMS: &[Buckets] = &[
    (HTTP_DURATION, HTTP_BUCKETS),
    (VALIDATION_DURATION, VALIDATION_BUCKETS),
];

/// The route label of requests no route matched (404s): never the raw path, whose values a
/// client chooses without bound.
const UNMATCHED: &str = "unmatched";

/// The jobs table is counted at most this often, however often `/metrics` is scraped.
const COUNT_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Installs the recorder (once per process) and describes every metric of the API.
pub fn install() -> PrometheusHandle {
    let handle = shared::metrics::install(HISTOGRAMS);
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status code."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from receiving a request to sending its response head, by method, route \
         template and status code."
    );
    describe_counter!(
        JOBS_SUBMITTED,
        "Jobs created by this API process, by endpoint (execute or jobs); a request that \
         names an existing job by its Idempotency-Key is not counted."
    );
    describe_counter!(
        REQUESTS_REJECTED,
        "Requests refused before their handler ran, by reason: missing_key, malformed_key, \
         invalid_key (401), or the quota a tenant was past (429)."
    );
    describe_histogram!(
        VALIDATION_DURATION,
        Unit::Seconds,
        "Time to parse and check one script on a validation thread (not counting the wait \
         for a free thread)."
    );
    describe_counter!(
        VALIDATION_REJECTED,
        "Scripts rejected by validation, by error code."
    );
    describe_gauge!(
        JOBS,
        "Jobs in the shared jobs table by status, across all API processes and workers; \
         counted at scrape time, at most once a second. Finished jobs stay until retention \
         deletes them."
    );
    describe_gauge!(
        JOBS_COUNT_UP,
        "1 if the last count of the jobs table for runbox_jobs succeeded, 0 if the store \
         failed (runbox_jobs then holds the last good count)."
    );
    handle
}

/// The recorder's handle and what `GET /metrics` needs to count the jobs table.
#[must_use]
pub fn exporter(store: Arc<dyn JobStore>) -> Arc<Exporter> {
    Arc::new(Exporter {
        handle: install(),
        store,
        counted_at: Mutex::new(None),
        tenants: std::sync::Mutex::new(String::new()),
    })
}

/// Renders this process's metrics, with the jobs table counted fresh enough.
pub struct Exporter {
    handle: PrometheusHandle,
    store: Arc<dyn JobStore>,
    /// When the jobs table was last counted; the lock also makes concurrent scrapes wait for
    /// one count instead of each running its own.
    counted_at: Mutex<Option<Instant>>,
    /// The per-tenant lines as last counted, rendered here rather than through the recorder:
    /// it would keep every tenant ever seen as a label, and the set must stay bounded.
    tenants: std::sync::Mutex<String>,
}

/// Tenants with labels of their own in `runbox_tenant_jobs`; the rest are summed as `other`.
const TENANT_LABELS: u32 = 20;

impl Exporter {
    async fn count_jobs(&self) {
        let mut counted_at = self.counted_at.lock().await;
        if counted_at.is_some_and(|at| at.elapsed() < COUNT_AT_MOST_EVERY) {
            return;
        }
        match self.store.count_by_status().await {
            Ok(counts) => {
                for status in JobStatus::ALL {
                    let count = counts
                        .iter()
                        .find(|(s, _)| *s == status)
                        .map_or(0, |(_, n)| *n);
                    gauge!(JOBS, "status" => status.as_str()).set(count as f64);
                }
                gauge!(JOBS_COUNT_UP).set(1.0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not count jobs for /metrics");
                gauge!(JOBS_COUNT_UP).set(0.0);
            }
        }
        if let Ok(loads) = self.store.busiest_tenants(TENANT_LABELS).await {
            *self
                .tenants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = tenant_lines(&loads);
        }
        // Also after a failure, so an unavailable store is not asked again on every scrape.
        *counted_at = Some(Instant::now());
    }
}

/// This API process's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics in the text exposition format.",
            content_type = "text/plain; version=0.0.4", body = String),
    )
)]
pub async fn render(State(exporter): State<Arc<Exporter>>) -> Response {
    exporter.count_jobs().await;
    let mut text = exporter.handle.render();
    text.push_str(
        &exporter
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    (
        [(header::CONTENT_TYPE, shared::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// `runbox_tenant_jobs{tenant, status}` for the busiest tenants: the API key's id, `none` for
/// jobs of no key, `other` for the sum of all tenants not listed.
fn tenant_lines(loads: &[TenantLoad]) -> String {
    let mut text = format!(
        "# HELP {TENANT_JOBS} Queued and running jobs of the {TENANT_LABELS} busiest tenants \
         (API key ids, as `api keys list` shows them; none: jobs of no key; other: all the \
         rest), counted at scrape time.\n# TYPE {TENANT_JOBS} gauge\n"
    );
    for load in loads {
        let tenant = match load.tenant {
            Some(tenant) => tenant
                .key_id()
                .map_or_else(|| "none".to_owned(), |id| id.to_string()),
            None => "other".to_owned(),
        };
        for (status, count) in [("queued", load.queued), ("running", load.running)] {
            text.push_str(&format!(
                "{TENANT_JOBS}{{tenant=\"{tenant}\",status=\"{status}\"}} {count}\n"
            ));
        }
    }
    text
}

/// Middleware counting and timing every request by method, route template and status. It
/// sits outside the load-shedding and timeout layers, so their 503s and 504s are counted too.
pub async fn track_http(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status_label(response.status())),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    histogram!(HTTP_DURATION, &labels).record(started.elapsed());
    response
}

/// The route template a request matched (`/jobs/{id}`), or `unmatched`.
fn route_label(matched: Option<&str>) -> String {
    matched.unwrap_or(UNMATCHED).to_owned()
}

/// Standard methods by name; anything else (a client may send any token) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The numeric status code, e.g. `404`.
fn status_label(status: StatusCode) -> String {
    status.as_u16().to_string()
}

/// Counts a job this process created, by the endpoint that created it.
pub fn job_submitted(endpoint: &'static str) {
    counter!(JOBS_SUBMITTED, "endpoint" => endpoint).increment(1);
}

/// Counts a request refused for `reason` (a closed set: the 401 reasons and the quotas).
pub fn request_rejected(reason: &'static str) {
    counter!(REQUESTS_REJECTED, "reason" => reason).increment(1);
}

/// Records one validation: how long it took and, when it rejected the script, why.
pub fn script_validated(took: Duration, rejected: Option<&Diagnostic>) {
    histogram!(VALIDATION_DURATION).record(took);
    if let Some(error) = rejected {
        counter!(VALIDATION_REJECTED, "code" => crate::error::rejection_code(error)).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use axum::Router;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    #[test]
    fn requests_no_route_matched_share_one_route_label() {
        assert_eq!(route_label(None), "unmatched");
        assert_eq!(route_label(Some("/jobs/{id}")), "/jobs/{id}");
    }

    #[test]
    fn status_label_is_the_numeric_code() {
        assert_eq!(status_label(StatusCode::OK), "200");
        assert_eq!(status_label(StatusCode::SERVICE_UNAVAILABLE), "503");
        assert_eq!(
            status_label(StatusCode::from_u16(599).expect("valid")),
            "599"
        );
    }

    #[test]
    fn unusual_methods_share_one_method_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let custom = Method::from_bytes(b"BREW").expect("valid token");
        assert_eq!(method_label(&custom), "other");
    }

    #[test]
    fn every_job_status_is_counted() {
        for status in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::TimedOut,
            JobStatus::Cancelled,
        ] {
            // Exhaustive, so a new status fails to compile here until `JobStatus::ALL` has it.
            match status {
                JobStatus::Queued
                | JobStatus::Running
                | JobStatus::Succeeded
                | JobStatus::Failed
                | JobStatus::TimedOut
                | JobStatus::Cancelled => assert!(JobStatus::ALL.contains(&status)),
            }
        }
    }

    #[test]
    fn every_histogram_has_buckets_in_increasing_order() {
        for (name, buckets) in HISTOGRAMS {
            assert!(!buckets.is_empty(), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
    }

    /// The middleware on a real router: labels come from the route template, never the path.
    #[tokio::test(flavor = "current_thread")]
    async fn requests_are_labelled_by_route_template_and_status() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(HTTP_DURATION.to_owned()),
                HTTP_BUCKETS,
            )
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Thread-local, and the runtime has one thread: other tests' metrics stay out.
        let _guard = metrics::set_default_local_recorder(&recorder);
        let app = Router::new()
            .route("/jobs/{id}", get(|| async { "job" }))
            .route("/jobs", post(|| async { StatusCode::ACCEPTED }))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(axum::middleware::from_fn(track_http));
        for (method, uri) in [
            ("GET", "/jobs/8f1c0000-0000-0000-0000-000000000000"),
            ("GET", "/jobs/another-id"),
            ("POST", "/jobs"),
            ("GET", "/no/such/path"),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("request");
            app.clone().oneshot(request).await.expect("response");
        }
        let text = handle.render();
        assert!(
            text.contains(
                r#"runbox_http_requests_total{method="GET",route="/jobs/{id}",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"runbox_http_requests_total{method="POST",route="/jobs",status="202"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"runbox_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("/no/such/path") && !text.contains("another-id"),
            "{text}"
        );
        assert!(
            text.contains(r#"runbox_http_request_duration_seconds_bucket{method="GET",route="unmatched",status="404",le="+Inf"} 1"#),
            "{text}"
        );
    }
}
