//! The worker's Prometheus metrics: jobs claimed, running and finished, queue wait, run and
//! sandbox start-up times, lost leases and reaped jobs, served at `GET /metrics` on
//! `METRICS_ADDR`, beside `GET /health` for container health checks.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::PrometheusHandle;
use shared::job::{ClaimedJob, Outcome};
use shared::metrics::Buckets;
use shared::store::Reaped;
use tokio::net::TcpListener;

use crate::config::{MetricsAddr, DEFAULT_METRICS_PORTS};

const JOBS_CLAIMED: &str = "runbox_jobs_claimed_total";
const JOBS_RUNNING: &str = "runbox_jobs_running";
const JOBS_FINISHED: &str = "runbox_jobs_finished_total";
const RESULTS_DISCARDED: &str = "runbox_results_discarded_total";
const QUEUE_WAIT: &str = "runbox_job_queue_wait_seconds";
const RUN_DURATION: &str = "runbox_job_run_seconds";
const SANDBOX_START: &str = "runbox_sandbox_start_seconds";
const WARM_STARTS: &str = "runbox_sandbox_warm_starts_total";
const COLD_STARTS: &str = "runbox_sandbox_cold_starts_total";
const TEMPLATE_RESTARTS: &str = "runbox_sandbox_template_restarts_total";
const LEASES_LOST: &str = "runbox_leases_lost_total";
const JOBS_REAPED: &str = "runbox_jobs_reaped_total";

/// From an idle queue (a few ms) to a long backlog.
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A trivial script takes a few milliseconds in a warm sandbox and about 0.1 s in a cold one,
/// one importing pandas about 0.4 s cold; the longest timeout is 60 s (plus teardown).
const RUN_BUCKETS: &[f64] = &[
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 90.0,
];

/// Warm: well under a millisecond to a few; cold: 50 to 100 ms, more on a loaded host.
const SANDBOX_START_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
];

const HISTOGRAMS: &[Buckets] = &[
    (QUEUE_WAIT, QUEUE_WAIT_BUCKETS),
    (RUN_DURATION, RUN_BUCKETS),
    (SANDBOX_START, SANDBOX_START_BUCKETS),
];

/// Installs the recorder (once per process) and describes every metric of the worker.
pub fn install() -> PrometheusHandle {
    let handle = shared::metrics::install(HISTOGRAMS);
    describe_counter!(JOBS_CLAIMED, "Jobs this worker claimed from the queue.");
    describe_gauge!(JOBS_RUNNING, "Jobs this worker is running now.");
    describe_counter!(
        JOBS_FINISHED,
        "Jobs this worker ran to an outcome and wrote back, by status and error_kind \
         (`none` when the job succeeded)."
    );
    describe_counter!(
        RESULTS_DISCARDED,
        "Outcomes this worker could not write back because the job had been cancelled or \
         taken over by the reaper meanwhile."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a job waited in the queue: the worker's clock when it claimed the job minus \
         the job's created_at (set by the API)."
    );
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Wall time of running one job on the executor, sandbox set-up and teardown included."
    );
    describe_histogram!(
        SANDBOX_START,
        Unit::Seconds,
        "Time from handing a job to its sandbox until the harness starts the script's code \
         (warm: writing the script to a forked child, compiling it; cold: also nsjail's \
         namespaces, mounts and Python's start-up), by `mode`; jobs whose script never \
         starts (syntax errors, broken sandboxes) are not counted."
    );
    describe_counter!(
        WARM_STARTS,
        "Jobs run in a child forked from a warm template, by the template's `kind` (`light`, \
         or `scientific` with numpy and pandas loaded)."
    );
    describe_counter!(
        COLD_STARTS,
        "Jobs run in a sandbox started from scratch, by `reason`: `cold_mode` \
         (SANDBOX_MODE=cold), `no_template` (none ready: starting, or failed to start), \
         `template_failed` (it failed as the job was handed over; the job then ran cold), \
         `warm_unavailable` (the warm self-test failed on this host), or `self_test` (the \
         worker's start-up check)."
    );
    describe_counter!(
        TEMPLATE_RESTARTS,
        "Warm templates started to replace another, by `kind` and `reason`: `max_jobs`, \
         `max_age`, `failed` (died or broke protocol) or `missing` (an earlier start failed)."
    );
    describe_counter!(
        LEASES_LOST,
        "Running jobs this worker stopped because their lease was lost: cancelled by a \
         client, or reaped after the worker could not renew it."
    );
    describe_counter!(
        JOBS_REAPED,
        "Jobs whose worker stopped renewing its lease, reaped by this worker: `requeued` for \
         another attempt or `failed` with worker_lost."
    );
    handle
}

/// Whether the worker takes jobs: set once its sandbox self-test passed and its store is open.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Opens the metrics listener: a configured address exactly, else the first free port of
/// [`DEFAULT_METRICS_PORTS`] on loopback; `None` when metrics are off.
///
/// # Errors
/// When a configured address cannot be bound, or every default port is taken.
pub async fn bind(address: MetricsAddr) -> io::Result<Option<TcpListener>> {
    match address {
        MetricsAddr::Off => Ok(None),
        MetricsAddr::Listen(address) => TcpListener::bind(address).await.map(Some),
        MetricsAddr::Default => bind_first_free(Ipv4Addr::LOCALHOST.into(), DEFAULT_METRICS_PORTS)
            .await
            .map(Some),
    }
}

/// Binds the first port of `ports` on `ip` that no other socket holds.
///
/// # Errors
/// `AddrInUse` when every port is taken; any other failure to bind at once, since the next
/// port would fail the same way.
pub async fn bind_first_free(ip: IpAddr, ports: RangeInclusive<u16>) -> io::Result<TcpListener> {
    for port in ports.clone() {
        match TcpListener::bind((ip, port)).await {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            bound => return bound,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "every port from {} to {} on {ip} is taken",
            ports.start(),
            ports.end()
        ),
    ))
}

/// Serves `GET /metrics`, and `GET /health` (200 once `readiness` is set, 503 before), on
/// `listener` until the process ends.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    readiness: Readiness,
) -> io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, shared::metrics::CONTENT_TYPE)],
                    handle.render(),
                )
                    .into_response()
            }),
        )
        .route(
            "/health",
            get(move || async move {
                if readiness.is_ready() {
                    (
                        StatusCode::OK,
                        axum::Json(serde_json::json!({"status": "ok"})),
                    )
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({"status": "starting"})),
                    )
                }
            }),
        );
    axum::serve(listener, app).await
}

/// Counts a claimed job and records how long it waited in the queue.
pub fn job_claimed(job: &ClaimedJob) {
    counter!(JOBS_CLAIMED).increment(1);
    // Across machines the two clocks may disagree; a negative wait is recorded as zero.
    let waited = (Utc::now() - job.created_at)
        .to_std()
        .unwrap_or(Duration::ZERO);
    histogram!(QUEUE_WAIT).record(waited);
}

/// One job on the executor: counted as running from `start` until dropped (a task aborted at
/// shutdown included).
pub struct JobRun {
    started: Instant,
}

impl JobRun {
    #[must_use]
    pub fn start() -> Self {
        gauge!(JOBS_RUNNING).increment(1.0);
        Self {
            started: Instant::now(),
        }
    }

    /// The run ended with an outcome (its time is recorded), or without one because the
    /// lease was lost.
    pub fn ended(self, with_outcome: bool) {
        if with_outcome {
            histogram!(RUN_DURATION).record(self.started.elapsed());
        } else {
            counter!(LEASES_LOST).increment(1);
        }
    }
}

impl Drop for JobRun {
    fn drop(&mut self) {
        gauge!(JOBS_RUNNING).decrement(1.0);
    }
}

/// Counts an outcome by whether the store took it.
pub fn job_finished(outcome: &Outcome, written: bool) {
    if written {
        let error_kind = match &outcome.result {
            Ok(_) => "none",
            Err(failure) => failure.kind.as_str(),
        };
        counter!(JOBS_FINISHED, "status" => outcome.status().as_str(), "error_kind" => error_kind)
            .increment(1);
    } else {
        counter!(RESULTS_DISCARDED).increment(1);
    }
}

/// Counts what one reaper pass did.
pub fn jobs_reaped(reaped: &Reaped) {
    counter!(JOBS_REAPED, "outcome" => "requeued").increment(reaped.requeued);
    counter!(JOBS_REAPED, "outcome" => "failed").increment(reaped.failed);
}

/// Records how long the sandbox took to start the script, on the `warm` or `cold` path.
pub fn sandbox_started(mode: &'static str, took: Duration) {
    histogram!(SANDBOX_START, "mode" => mode).record(took);
}

/// Counts a job run on a warm template of `kind` (`light`, `scientific`).
pub fn warm_start(kind: &'static str) {
    counter!(WARM_STARTS, "kind" => kind).increment(1);
}

/// Counts a job run in a sandbox started from scratch.
pub fn cold_start(reason: &'static str) {
    counter!(COLD_STARTS, "reason" => reason).increment(1);
}

/// Counts a template of `kind` started to replace another.
pub fn template_restart(kind: &'static str, reason: &'static str) {
    counter!(TEMPLATE_RESTARTS, "kind" => kind, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_histogram_has_buckets_in_increasing_order() {
        for (name, buckets) in HISTOGRAMS {
            assert!(!buckets.is_empty(), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
    }

    /// A port held by this test, and the next `len` ports to scan from it.
    fn taken_port_and_range(len: u16) -> (std::net::TcpListener, RangeInclusive<u16>) {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = taken.local_addr().expect("local addr").port();
        (taken, port..=port.saturating_add(len))
    }

    #[tokio::test]
    async fn the_first_free_port_after_a_taken_one_is_bound() {
        let (_taken, ports) = taken_port_and_range(20);
        let listener = bind_first_free(Ipv4Addr::LOCALHOST.into(), ports.clone())
            .await
            .expect("a free port in the range");
        let bound = listener.local_addr().expect("local addr").port();
        assert!(ports.contains(&bound) && bound > *ports.start(), "{bound}");
        for skipped in *ports.start()..bound {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", skipped)).is_err(),
                "port {skipped} was free but skipped"
            );
        }
    }

    #[tokio::test]
    async fn a_range_with_every_port_taken_is_an_address_in_use_error() {
        let (_taken, ports) = taken_port_and_range(0);
        let error = bind_first_free(Ipv4Addr::LOCALHOST.into(), ports)
            .await
            .expect_err("the only port is taken");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn a_configured_address_that_is_taken_is_an_error() {
        let (taken, _) = taken_port_and_range(0);
        let address = taken.local_addr().expect("local addr");
        let error = bind(MetricsAddr::Listen(address))
            .await
            .expect_err("the configured port is taken");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn metrics_turned_off_bind_nothing() {
        assert!(bind(MetricsAddr::Off)
            .await
            .expect("nothing to bind")
            .is_none());
    }
}
