//! What every handler can reach: the store, the request limits, the validator and the
//! completion waiters.

use std::sync::Arc;
use std::time::Duration;

use shared::store::JobStore;

use crate::auth::Authenticator;
use crate::checker::ScriptChecker;
use crate::completions::Completions;
use crate::config::RequestLimits;
use crate::metrics::Exporter;
use crate::quota::QuotaDefaults;
use crate::webhooks::WebhookConfig;

/// Shared handler state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn JobStore>,
    pub auth: Arc<Authenticator>,
    pub limits: RequestLimits,
    pub checker: Arc<ScriptChecker>,
    pub completions: Arc<Completions>,
    pub queue_grace: Duration,
    pub max_queued_jobs: u64,
    pub quota_defaults: QuotaDefaults,
    pub webhooks: WebhookConfig,
    pub idempotency_window: Duration,
    pub cancel_on_disconnect: bool,
    pub metrics: Arc<Exporter>,
    /// `/openapi.json`, built and serialized once at start (it depends only on the limits).
    pub openapi: axum::body::Bytes,
}

/// Metrics rendering needs only its exporter, not the whole state.
impl axum::extract::FromRef<AppState> for Arc<Exporter> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.metrics)
    }
}
