//! HTTP handlers. They check input, talk to the store through `JobStore`, and shape replies;
//! status mapping lives in `error` and `view`.

use std::time::Duration;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::job::{Cancelled, Enqueued, Idempotency, JobId, NewJob};
use shared::store::JobStore;

use crate::error::ApiError;
use crate::request::ScriptRequest;
use crate::state::AppState;
use crate::view::{execute_status, JobView};

/// All routes of the API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/execute", post(execute))
        .route("/jobs", post(submit))
        .route("/jobs/{id}", get(job).delete(cancel))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/validate", post(validate))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A job this request stored, or the one its `Idempotency-Key` already names.
struct Submitted {
    id: JobId,
    created: bool,
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
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn submit_job(
    state: &AppState,
    headers: &HeaderMap,
    request: ScriptRequest,
) -> Result<Submitted, ApiError> {
    let key = idempotency_key(headers)?;
    state.checker.check(request.script.clone()).await?;
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
struct CancelOnDisconnect {
    store: Option<Arc<dyn JobStore>>,
    id: JobId,
}

impl CancelOnDisconnect {
    fn disarm(&mut self) {
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

fn accepted(id: JobId, status: &str) -> Response {
    let location = format!("/jobs/{id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id.to_string(), "status": status, "location": location })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `POST /execute`: queue the script, wait for it, answer with its outcome.
async fn execute(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: ScriptRequest,
) -> Result<Response, ApiError> {
    let wait = request.limits.timeout + state.queue_grace;
    let Submitted { id, created } = submit_job(&state, &headers, request).await?;
    let mut guard = CancelOnDisconnect {
        store: (created && state.cancel_on_disconnect).then(|| Arc::clone(&state.store)),
        id,
    };
    let finished = state.completions.wait(id, wait).await;
    guard.disarm();
    if !finished {
        let status = state
            .store
            .get(id)
            .await?
            .map_or("queued", |job| job.status.as_str());
        return Ok(accepted(id, status));
    }
    let job = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("job {id} vanished after finishing")))?;
    let (status, code) = execute_status(&job);
    // Serialized straight from the view: going through `Value` would turn large integers in
    // the result into floats.
    let body = JobView {
        code,
        ..JobView::new(&job)
    };
    Ok((status, Json(body)).into_response())
}

/// `POST /jobs`: queue the script and answer at once.
async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: ScriptRequest,
) -> Result<Response, ApiError> {
    let Submitted { id, created } = submit_job(&state, &headers, request).await?;
    let status = if created {
        "queued"
    } else {
        state
            .store
            .get(id)
            .await?
            .map_or("queued", |job| job.status.as_str())
    };
    Ok(accepted(id, status))
}

/// `POST /jobs/<id>/cancel` and `DELETE /jobs/<id>`.
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = id.parse().map_err(|_| ApiError::InvalidJobId(id.clone()))?;
    match state.store.cancel(job_id).await? {
        Cancelled::Done => {
            tracing::info!(job_id = %job_id, "job cancelled");
            let job = state
                .store
                .get(job_id)
                .await?
                .ok_or_else(|| ApiError::JobNotFound(id.clone()))?;
            Ok(Json(JobView::new(&job)).into_response())
        }
        Cancelled::AlreadyFinished(status) => Err(ApiError::AlreadyFinished {
            id,
            status: status.as_str(),
        }),
        Cancelled::NotFound => Err(ApiError::JobNotFound(id)),
    }
}

/// `GET /jobs/<id>`.
///
/// `?wait=<seconds>` (at most 30) long-polls: the answer comes when the job is finished or the
/// wait ends, whichever is first.
async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let job_id: JobId = id.parse().map_err(|_| ApiError::InvalidJobId(id.clone()))?;
    let wait = long_poll_wait(query.as_deref())?;
    let mut job = state
        .store
        .get(job_id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.clone()))?;
    if !job.status.is_terminal() && !wait.is_zero() && state.completions.wait(job_id, wait).await {
        job = state
            .store
            .get(job_id)
            .await?
            .ok_or(ApiError::JobNotFound(id))?;
    }
    Ok(Json(JobView::new(&job)).into_response())
}

/// Longest `?wait=` a client may ask for.
const MAX_LONG_POLL: Duration = Duration::from_secs(30);

fn long_poll_wait(query: Option<&str>) -> Result<Duration, ApiError> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("wait="))
    else {
        return Ok(Duration::ZERO);
    };
    value
        .parse::<f64>()
        .ok()
        .filter(|secs| (0.0..=MAX_LONG_POLL.as_secs_f64()).contains(secs))
        .map(Duration::from_secs_f64)
        .ok_or(ApiError::InvalidField {
            field: "wait",
            message: "`wait` must be a number of seconds from 0 to 30".to_owned(),
        })
}

/// `POST /validate`: the checks `/execute` makes before queueing, without running anything.
async fn validate(
    State(state): State<AppState>,
    request: ScriptRequest,
) -> Result<Json<Value>, ApiError> {
    let main = state.checker.check(request.script).await?;
    Ok(Json(json!({ "ok": true, "main": main })))
}

/// `GET /health`: the process is up.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: the store answers.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_poll_wait_is_bounded() {
        assert_eq!(long_poll_wait(None).ok(), Some(Duration::ZERO));
        assert_eq!(
            long_poll_wait(Some("wait=2.5")).ok(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            long_poll_wait(Some("x=1&wait=30")).ok(),
            Some(MAX_LONG_POLL)
        );
        for bad in ["wait=31", "wait=-1", "wait=soon", "wait="] {
            assert!(long_poll_wait(Some(bad)).is_err(), "{bad}");
        }
    }
}
