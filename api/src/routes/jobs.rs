//! `/execute` and `/jobs`: running, queueing, following, listing and cancelling jobs.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use shared::job::{Cancelled, Job, JobId, JobStatus, ListCursor, ListQuery};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::ExecuteFailure;
use crate::request::{ScriptRequest, ScriptRequestBody};
use crate::state::AppState;
use crate::submission::{self, CancelOnDisconnect, Submitted};
use crate::view::{execute_status, Accepted, JobPage, JobSummaryView, JobView, StatusFilter};

/// Description of the `Idempotency-Key` request header, shared by the routes that take it.
const IDEMPOTENCY_KEY: &str = "1 to 255 visible ASCII characters. The same key with the same \
    body (script, timeout, memory) within `IDEMPOTENCY_WINDOW_SECS` returns the same job instead \
    of creating another; with a different body it is a 422 `idempotency_key_reused`.";

fn accepted(id: JobId, status: &'static str) -> Response {
    let body = Accepted::new(id, status);
    let location = HeaderValue::from_str(&body.location);
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(value) = location {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Run a script and answer with its outcome.
///
/// Validates and queues the script, waits for a worker to run it, and answers with the
/// finished job (plus `code` when it did not succeed). A job still unfinished after its
/// timeout plus `QUEUE_GRACE_SECS` gets a 202 instead and keeps running. A client that
/// disconnects before the answer cancels the job (`EXECUTE_CANCEL_ON_DISCONNECT`).
#[utoipa::path(
    post,
    path = "/execute",
    tag = "jobs",
    request_body = ScriptRequestBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
        description = IDEMPOTENCY_KEY)),
    responses(
        (status = 200, description = "`main()` returned a JSON value.", body = JobView),
        (status = 202, description = "Not finished in time; the job keeps running.", body = Accepted,
            headers(("Location" = String, description = "`/jobs/<id>`: where to follow the job."))),
        (status = 400, description = "The request or the script is invalid (`invalid_json`, \
            `invalid_request`, `invalid_idempotency_key`, `syntax_error`, `missing_main`, \
            `main_signature`); a syntax error only the sandbox's `compile()` finds comes as \
            the failed job.", body = ExecuteFailure),
        (status = 408, description = "The script ran past its timeout (`timeout`); `stdout` \
            holds what it printed before the kill.", body = JobView),
        (status = 409, description = "The job was cancelled while waiting (`cancelled`).", body = JobView),
        (status = 413, description = "Script or body too large (`payload_too_large`).", body = ErrorBody),
        (status = 422, description = "The job failed (`exception`, `result_not_json`, `exited`, \
            `memory_limit`, `killed`, `output_limit`), or the `Idempotency-Key` was used with \
            another body (`idempotency_key_reused`).", body = ExecuteFailure),
        (status = 429, description = "`MAX_QUEUED_JOBS` jobs are waiting (`queue_full`), or the \
            API key is past one of its quotas (`quota_exceeded`, naming `quota`).", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 500, description = "The sandbox could not be set up (`sandbox_error`, as the \
            failed job), or an internal error.", body = ExecuteFailure),
        (status = 503, description = "The job store is unavailable, validation stayed busy, too \
            many requests are in flight (`store_unavailable`, `busy`, `overloaded`), or the job's \
            workers were lost too often (`worker_lost`, as the failed job).", body = ExecuteFailure,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub(super) async fn execute(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request: ScriptRequest,
) -> Result<Response, ApiError> {
    let wait = request.limits.timeout + state.queue_grace;
    let submitted = submission::submit(&state, &caller, &headers, request).await?;
    if submitted.created {
        crate::metrics::job_submitted("execute");
    }
    let mut guard = CancelOnDisconnect::new(&state, &submitted);
    let id = submitted.id;
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

/// Queue a script and answer at once.
///
/// Same body and checks as `/execute`; follow the job at its `Location`.
#[utoipa::path(
    post,
    path = "/jobs",
    tag = "jobs",
    request_body = ScriptRequestBody,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
        description = IDEMPOTENCY_KEY)),
    responses(
        (status = 202, description = "Queued (or, for a repeated `Idempotency-Key`, the job it \
            names).", body = Accepted,
            headers(("Location" = String, description = "`/jobs/<id>`: where to follow the job."))),
        (status = 400, description = "The request or the script is invalid.", body = ErrorBody),
        (status = 413, description = "Script or body too large (`payload_too_large`).", body = ErrorBody),
        (status = 422, description = "The `Idempotency-Key` was used with another body \
            (`idempotency_key_reused`).", body = ErrorBody),
        (status = 429, description = "`MAX_QUEUED_JOBS` jobs are waiting (`queue_full`), or the \
            API key is past one of its quotas (`quota_exceeded`, naming `quota`).", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 503, description = "The job store is unavailable, validation stayed busy or too \
            many requests are in flight.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub(super) async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request: ScriptRequest,
) -> Result<Response, ApiError> {
    let Submitted { id, created } = submission::submit(&state, &caller, &headers, request).await?;
    if created {
        crate::metrics::job_submitted("jobs");
    }
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

/// Cancel a job.
///
/// A queued job is cancelled at once; a running one too, and its worker kills the sandbox at
/// its next heartbeat. Same as `DELETE /jobs/{id}`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "The job's id.")),
    responses(
        (status = 200, description = "Cancelled; the job as it now is.", body = JobView),
        (status = 400, description = "The id is not a UUID (`invalid_job_id`).", body = ErrorBody),
        (status = 404, description = "No such job (`not_found`).", body = ErrorBody),
        (status = 409, description = "The job had already finished (`already_finished`).", body = ErrorBody),
    )
)]
pub(super) async fn cancel_job(
    state: State<AppState>,
    caller: Extension<Caller>,
    id: Path<String>,
) -> Result<Response, ApiError> {
    cancel(state, caller, id).await
}

/// Cancel a job.
///
/// Same as `POST /jobs/{id}/cancel`.
#[utoipa::path(
    delete,
    path = "/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "The job's id.")),
    responses(
        (status = 200, description = "Cancelled; the job as it now is.", body = JobView),
        (status = 400, description = "The id is not a UUID (`invalid_job_id`).", body = ErrorBody),
        (status = 404, description = "No such job (`not_found`).", body = ErrorBody),
        (status = 409, description = "The job had already finished (`already_finished`).", body = ErrorBody),
    )
)]
pub(super) async fn delete_job(
    state: State<AppState>,
    caller: Extension<Caller>,
    id: Path<String>,
) -> Result<Response, ApiError> {
    cancel(state, caller, id).await
}

/// The job with this id, if the caller may see it: another tenant's job is not found, as if
/// it did not exist.
pub(super) async fn visible_job(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Job, ApiError> {
    let job_id: JobId = id
        .parse()
        .map_err(|_| ApiError::InvalidJobId(id.to_owned()))?;
    state
        .store
        .get(job_id)
        .await?
        .filter(|job| caller.sees(job.tenant))
        .ok_or_else(|| ApiError::JobNotFound(id.to_owned()))
}

async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id = visible_job(&state, &caller, &id).await?.id;
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

/// Get a job.
///
/// `?wait=<seconds>` (at most 30) long-polls: the answer comes when the job is finished or the
/// wait ends, whichever is first.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    params(
        ("id" = String, Path, format = Uuid, description = "The job's id."),
        ("wait" = Option<f64>, Query, minimum = 0, maximum = 30,
            description = "Seconds to wait for the job to finish before answering (default 0)."),
    ),
    responses(
        (status = 200, description = "The job.", body = JobView),
        (status = 400, description = "The id is not a UUID (`invalid_job_id`) or `wait` is out \
            of range (`invalid_request`).", body = ErrorBody),
        (status = 404, description = "No such job (`not_found`).", body = ErrorBody),
    )
)]
pub(super) async fn job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let wait = long_poll_wait(query.as_deref())?;
    let mut job = visible_job(&state, &caller, &id).await?;
    let job_id = job.id;
    if !job.status.is_terminal() && !wait.is_zero() && state.completions.wait(job_id, wait).await {
        job = state
            .store
            .get(job_id)
            .await?
            .ok_or(ApiError::JobNotFound(id))?;
    }
    Ok(Json(JobView::new(&job)).into_response())
}

/// Query of `GET /jobs`; every field is checked by [`list_query`] with a message naming it.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Jobs per page of `GET /jobs` when the client names no `limit`, and the most it may ask for.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

fn list_query(params: ListParams) -> Result<ListQuery, ApiError> {
    let invalid = |field: &'static str, message: &str| ApiError::InvalidField {
        field,
        message: message.to_owned(),
    };
    // An empty value is not "no filter": the description declares each parameter's values,
    // and `status=` is none of them.
    let status = params
        .status
        .map(|s| {
            JobStatus::parse(&s).ok_or_else(|| {
                invalid(
                    "status",
                    "`status` must be one of queued, running, succeeded, failed, timed_out, cancelled",
                )
            })
        })
        .transpose()?;
    let limit = match params.limit {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| invalid("limit", "`limit` must be an integer from 1 to 100"))?,
    };
    let after = params
        .cursor
        .map(|c| {
            c.parse::<ListCursor>().map_err(|()| {
                invalid(
                    "cursor",
                    "`cursor` must be a `next_cursor` from an earlier `GET /jobs` answer",
                )
            })
        })
        .transpose()?;
    Ok(ListQuery {
        tenant: None,
        status,
        after,
        limit,
    })
}

/// List jobs, newest first.
///
/// Keyset pagination: pass the previous page's `next_cursor` as `cursor` to get the next one.
/// Entries hold a job's state and timings, not its script, result or output.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    params(
        ("status" = inline(Option<StatusFilter>), Query,
            description = "Only jobs in this status: `queued`, `running`, `succeeded`, `failed`, \
            `timed_out` or `cancelled`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "Jobs per page (default 20)."),
        ("cursor" = Option<String>, Query,
            description = "The `next_cursor` of the previous page (opaque)."),
    ),
    responses(
        (status = 200, description = "One page of jobs; `next_cursor` is null on the last.",
            body = JobPage),
        (status = 400, description = "`status`, `limit` or `cursor` is invalid \
            (`invalid_request`, naming `field`).", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::InvalidField {
        field: "query",
        message: format!("query string: {}", e.body_text()),
    })?;
    let query = ListQuery {
        tenant: caller.visible_tenant(),
        ..list_query(params)?
    };
    // One row more than the page tells whether another page follows.
    let mut jobs = state
        .store
        .list(&ListQuery {
            limit: query.limit + 1,
            ..query
        })
        .await?;
    let more = jobs.len() > query.limit as usize;
    jobs.truncate(query.limit as usize);
    let next_cursor = jobs
        .last()
        .filter(|_| more)
        .map(|last| ListCursor::after(last).to_string());
    let page = JobPage {
        jobs: jobs.iter().map(JobSummaryView::new).collect(),
        next_cursor,
    };
    Ok(Json(page).into_response())
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

    fn params(status: Option<&str>, limit: Option<&str>, cursor: Option<&str>) -> ListParams {
        ListParams {
            status: status.map(str::to_owned),
            limit: limit.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn list_query_defaults_to_twenty_newest_of_any_status() {
        let query = list_query(ListParams::default()).expect("valid");
        assert_eq!(query.status, None);
        assert_eq!(query.after, None);
        assert_eq!(query.limit, DEFAULT_PAGE);
    }

    #[test]
    fn list_query_rejects_each_bad_field_by_name() {
        for (bad, field) in [
            (params(Some("done"), None, None), "status"),
            (params(None, Some("0"), None), "limit"),
            (params(None, Some("101"), None), "limit"),
            (params(None, Some("ten"), None), "limit"),
            (params(None, None, Some("garbage")), "cursor"),
            (params(Some(""), None, None), "status"),
            (params(None, Some(""), None), "limit"),
            (params(None, None, Some("")), "cursor"),
        ] {
            match list_query(bad) {
                Err(ApiError::InvalidField { field: named, .. }) => assert_eq!(named, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }
}
