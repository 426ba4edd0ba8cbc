//! Taking a script in as a job: the checks every submission gets (idempotency key, the
//! script, the queue limit), storing it, and cancelling an `/execute` job whose client left.
//! Handlers call this and only shape the answer.

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::Utc;
use sha2::{Digest, Sha256};
use shared::job::{Cancelled, Enqueued, Idempotency, JobId, NewJob};
use shared::store::JobStore;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::quota;
use crate::request::{Args, ScriptRequest};
use crate::state::AppState;
use crate::webhooks;
use crate::REQUEST_ID;

/// A job this request stored, or the one its `Idempotency-Key` already names.
pub(crate) struct Submitted {
    pub(crate) id: JobId,
    pub(crate) created: bool,
}

/// The `Idempotency-Key` header, if sent.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?
        .trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(key.to_owned()))
}

/// Digest of what makes two requests "the same" for an idempotency key.
fn request_hash(request: &ScriptRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request.script.as_bytes());
    hasher.update(request.limits.timeout.as_millis().to_le_bytes());
    hasher.update(request.limits.memory_mb.to_le_bytes());
    if let Some(args) = &request.args {
        hasher.update(b"args");
        hasher.update(args.text.as_bytes());
    }
    if let Some(url) = &request.webhook_url {
        hasher.update(b"webhook");
        hasher.update(url.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) async fn submit(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: ScriptRequest,
) -> Result<Submitted, ApiError> {
    let key = idempotency_key(headers)?;
    state
        .checker
        .check(request.script.clone(), Args::names(request.args.as_ref()))
        .await?;
    if let Some(url) = &request.webhook_url {
        webhooks::check(&state.webhooks, url).await?;
    }
    if let Caller::Key(api_key) = caller {
        quota::admit(state, api_key, &request.limits).await?;
    }
    let depth = state.store.queue_depth().await?;
    if depth >= state.max_queued_jobs {
        return Err(ApiError::QueueFull {
            depth,
            limit: state.max_queued_jobs,
        });
    }
    let job = NewJob {
        id: JobId::new(),
        idempotency: key.map(|key| Idempotency {
            key,
            request_hash: request_hash(&request),
            window: state.idempotency_window,
        }),
        script: request.script,
        limits: request.limits,
        created_at: Utc::now(),
        request_id: headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        tenant: caller.tenant(),
        args: request.args.map(|args| args.text),
        webhook_url: request.webhook_url,
    };
    match state.store.enqueue(&job).await? {
        Enqueued::Created => {
            tracing::info!(job_id = %job.id, "job queued");
            Ok(Submitted {
                id: job.id,
                created: true,
            })
        }
        Enqueued::Existing {
            id,
            same_request: true,
        } => Ok(Submitted { id, created: false }),
        Enqueued::Existing {
            id,
            same_request: false,
        } => Err(ApiError::IdempotencyConflict {
            job_id: id.to_string(),
        }),
    }
}

/// Cancels the job of an `/execute` whose client went away before the answer; disarmed once
/// the answer is ready.
pub(crate) struct CancelOnDisconnect {
    store: Option<Arc<dyn JobStore>>,
    id: JobId,
}

impl CancelOnDisconnect {
    /// Armed only for a job this request created, and only where `EXECUTE_CANCEL_ON_DISCONNECT`
    /// is on.
    pub(crate) fn new(state: &AppState, submitted: &Submitted) -> Self {
        Self {
            store: (submitted.created && state.cancel_on_disconnect)
                .then(|| Arc::clone(&state.store)),
            id: submitted.id,
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.store = None;
    }
}

impl Drop for CancelOnDisconnect {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let id = self.id;
            tokio::spawn(async move {
                match store.cancel(id).await {
                    Ok(Cancelled::Done) => {
                        tracing::info!(job_id = %id, "client disconnected; job cancelled");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(job_id = %id, error = %e, "could not cancel job"),
                }
            });
        }
    }
}
