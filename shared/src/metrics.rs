//! The Prometheus recorder both binaries install: real histograms with buckets each binary
//! chooses, rendered in the text exposition format for `GET /metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples recorded since the last scrape are folded into their buckets,
/// so memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// A histogram's name and the upper bounds of its buckets (in the metric's unit).
pub type Buckets = (&'static str, &'static [f64]);

/// Installs the process-wide recorder on the first call, rendering each named histogram with
/// its buckets (any other histogram would be rendered as a summary, so name them all); later
/// calls return the same handle. Inside a Tokio runtime it also starts the upkeep task.
///
/// # Panics
/// When a bucket list is empty: they are constants, so that is a programming error.
pub fn install(histograms: &[Buckets]) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in histograms {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
                    .expect("histogram buckets are not empty");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = ::metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "another metrics recorder is installed; /metrics will stay empty");
            }
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let upkeep = handle.clone();
                runtime.spawn(async move {
                    let mut every = tokio::time::interval(UPKEEP_EVERY);
                    loop {
                        every.tick().await;
                        upkeep.run_upkeep();
                    }
                });
            }
            handle
        })
        .clone()
}
