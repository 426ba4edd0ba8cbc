//! HTTP handlers. They check input, talk to the store through `JobStore`, and shape replies;
//! status mapping lives in `error` and `view`.

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};
use shared::job::{JobId, NewJob};

use crate::error::ApiError;
use crate::request::ScriptRequest;
use crate::state::AppState;
use crate::view::{execute_status, JobView};

/// All routes of the API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/execute", post(execute))
        .route("/jobs", post(submit))
        .route("/jobs/{id}", get(job))
        .route("/validate", post(validate))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn enqueue(state: &AppState, request: ScriptRequest) -> Result<JobId, ApiError> {
    state.checker.check(request.script.clone()).await?;
    let job = NewJob {
        id: JobId::new(),
        script: request.script,
        limits: request.limits,
        created_at: Utc::now(),
    };
    state.store.enqueue(&job).await?;
    tracing::info!(job_id = %job.id, "job queued");
    Ok(job.id)
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
    request: ScriptRequest,
) -> Result<Response, ApiError> {
    let wait = request.limits.timeout + state.queue_grace;
    let id = enqueue(&state, request).await?;
    if !state.completions.wait(id, wait).await {
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
    request: ScriptRequest,
) -> Result<Response, ApiError> {
    let id = enqueue(&state, request).await?;
    Ok(accepted(id, "queued"))
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
