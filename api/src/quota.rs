//! Per-key quotas on submissions: the largest `timeout` and `memory_mb` a key may ask for, its
//! queued jobs, and its submissions per minute. Each has a server default (`QUOTA_*`) and a
//! per-key override. They live in the store, so several API processes enforce them together.
//! (Running jobs at once are capped where jobs are claimed: see `JobStore::claim`.)

use std::time::Duration;

use chrono::Utc;
use shared::job::Limits;
use shared::tenant::{ApiKey, Tenant};

use crate::error::ApiError;
use crate::state::AppState;

/// The server's quotas for keys that set none of their own; 0 means no limit.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct QuotaDefaults {
    /// Jobs of one API key waiting in the queue; past it, submissions get 429 (0: no limit).
    #[arg(long, env = "QUOTA_MAX_QUEUED", default_value_t = 1000)]
    pub quota_max_queued: u32,

    /// Submissions per minute per API key, as a token bucket holding a minute's worth (bursts
    /// up to it, then the rate); past it, 429 (0: no limit).
    #[arg(long, env = "QUOTA_SUBMISSIONS_PER_MINUTE", default_value_t = 600)]
    pub quota_submissions_per_minute: u32,

    /// Largest `timeout` an API key may ask for, in seconds (default: MAX_TIMEOUT_SECS).
    #[arg(long, env = "QUOTA_MAX_TIMEOUT_SECS")]
    pub quota_max_timeout_secs: Option<f64>,

    /// Largest `memory_mb` an API key may ask for (default: MAX_MEMORY_MB).
    #[arg(long, env = "QUOTA_MAX_MEMORY_MB")]
    pub quota_max_memory_mb: Option<u32>,
}

/// Which quota a refused submission was past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    MaxTimeout,
    MaxMemory,
    MaxQueued,
    SubmissionsPerMinute,
}

impl Quota {
    /// Its name in error bodies, metrics and `api keys create` flags.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxTimeout => "max_timeout",
            Self::MaxMemory => "max_memory_mb",
            Self::MaxQueued => "max_queued",
            Self::SubmissionsPerMinute => "submissions_per_minute",
        }
    }
}

/// A submission past one of its key's quotas.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaExceeded {
    pub quota: Quota,
    /// The quota's value: seconds for `max_timeout`, a count or MiB otherwise.
    pub limit: f64,
    /// When retrying may succeed.
    pub retry_after: Duration,
}

/// How long a client past a quota that waiting does not lift (timeout, memory) is told to
/// wait: long enough not to hammer, short enough to notice a raised quota.
const STATIC_RETRY: Duration = Duration::from_secs(60);

/// How long a client past its queued-jobs quota is told to wait: a short job's run.
const QUEUED_RETRY: Duration = Duration::from_secs(1);

/// Admits a submission of `key` asking for `limits`, or says which quota it is past. Only
/// the rate check writes (it takes a token), and it runs last, so a refused submission costs
/// no token.
///
/// # Errors
/// [`ApiError::QuotaExceeded`], or the store's failure.
pub async fn admit(state: &AppState, key: &ApiKey, limits: &Limits) -> Result<(), ApiError> {
    let defaults = &state.quota_defaults;
    let max_timeout = key
        .quotas
        .max_timeout
        .or_else(|| {
            defaults
                .quota_max_timeout_secs
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
        })
        .filter(|d| !d.is_zero());
    if let Some(max) = max_timeout.filter(|max| limits.timeout > *max) {
        return Err(exceeded(Quota::MaxTimeout, max.as_secs_f64(), STATIC_RETRY));
    }
    let max_memory = nonzero(key.quotas.max_memory_mb.or(defaults.quota_max_memory_mb));
    if let Some(max) = max_memory.filter(|max| limits.memory_mb > *max) {
        return Err(exceeded(Quota::MaxMemory, f64::from(max), STATIC_RETRY));
    }
    if let Some(max) = nonzero(key.quotas.max_queued.or(Some(defaults.quota_max_queued))) {
        if state.store.queued_of(Tenant::key(key.id)).await? >= u64::from(max) {
            return Err(exceeded(Quota::MaxQueued, f64::from(max), QUEUED_RETRY));
        }
    }
    let per_minute = key
        .quotas
        .submissions_per_minute
        .or(Some(defaults.quota_submissions_per_minute));
    if let Some(per_minute) = nonzero(per_minute) {
        if let Some(wait) = state
            .store
            .take_submission(key.id, per_minute, Utc::now())
            .await?
        {
            return Err(exceeded(
                Quota::SubmissionsPerMinute,
                f64::from(per_minute),
                wait,
            ));
        }
    }
    Ok(())
}

fn nonzero(value: Option<u32>) -> Option<u32> {
    value.filter(|v| *v > 0)
}

fn exceeded(quota: Quota, limit: f64, retry_after: Duration) -> ApiError {
    crate::metrics::request_rejected(quota.as_str());
    ApiError::QuotaExceeded(QuotaExceeded {
        quota,
        limit,
        retry_after,
    })
}
