//! The JSON shapes of answers (a job, as `GET /jobs/<id>` and `/execute` report it, and the
//! small bodies of the other routes), and which HTTP status `/execute` answers for each way a
//! job can end.

use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use pycheck::MainSignature;
use serde::Serialize;
use serde_json::value::RawValue;
use shared::job::{ErrorKind, Job, JobId, JobStatus, JobSummary};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// A job as clients see it. Fields that do not apply yet are `null`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView<'a> {
    #[schema(format = Uuid)]
    pub id: String,
    /// Stable failure code, set only on `/execute` answers for jobs that did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = execute_code_schema)]
    pub code: Option<&'static str>,
    #[schema(schema_with = job_status_schema)]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required)]
    pub started_at: Option<String>,
    #[schema(format = DateTime, required)]
    pub finished_at: Option<String>,
    /// The keyword arguments `main` is called with, exactly as sent; null when none.
    #[schema(value_type = Option<Object>, required)]
    pub args: Option<&'a RawValue>,
    /// What `main()` returned, once the job succeeded.
    #[schema(value_type = serde_json::Value, required)]
    pub result: Option<&'a RawValue>,
    /// What the script printed, up to the output limit.
    #[schema(required)]
    pub stdout: Option<&'a str>,
    pub stdout_truncated: bool,
    #[schema(required)]
    pub stderr: Option<&'a str>,
    pub stderr_truncated: bool,
    /// What went wrong, for people.
    #[schema(required)]
    pub error: Option<&'a str>,
    /// Why the job did not succeed; stable.
    #[schema(schema_with = error_kind_schema, required)]
    pub error_kind: Option<&'static str>,
    /// For a `syntax_error`, its 1-based line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// For a `syntax_error`, its 1-based column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The code the script exited with (`exited`).
    #[schema(required)]
    pub exit_code: Option<i32>,
    /// The signal that killed the script, e.g. `SIGSEGV` (`killed`).
    #[schema(required)]
    pub signal: Option<&'a str>,
    /// Wall time in the sandbox.
    #[schema(required)]
    pub duration_ms: Option<u64>,
    /// CPU time, where the host can measure it.
    #[schema(required)]
    pub cpu_ms: Option<u64>,
    /// Peak memory, where the host can measure it.
    #[schema(required)]
    pub peak_memory_bytes: Option<u64>,
    /// The job's time limit, in seconds.
    pub timeout: f64,
    /// The job's memory limit, in MiB.
    pub memory_mb: u32,
    /// Runs so far: more than 1 when a worker was lost mid-run.
    pub attempt: u32,
    /// The worker that ran (or runs) the job.
    #[schema(required)]
    pub worker_id: Option<&'a str>,
    /// The `x-request-id` of the request that created the job.
    #[schema(required)]
    pub request_id: Option<&'a str>,
    /// The job's webhook and its delivery; null when the request named none.
    #[schema(required)]
    pub webhook: Option<WebhookView<'a>>,
}

/// Where a job's end is announced, and how far that got.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView<'a> {
    pub url: &'a str,
    /// `pending` (the job runs, or delivery is being retried), `delivered`, or `failed` (given
    /// up after `WEBHOOK_RETRY_SECS`).
    #[schema(pattern = "^(pending|delivered|failed)$")]
    pub status: &'static str,
    /// Deliveries tried so far.
    pub attempts: u32,
    /// Why the last try failed.
    #[schema(required)]
    pub last_error: Option<&'a str>,
    #[schema(format = DateTime, required)]
    pub delivered_at: Option<String>,
}

/// A queued job: the answer of `POST /jobs`, and of `/execute` when the job did not finish in
/// time.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(schema_with = job_status_schema)]
    pub status: &'static str,
    /// Where to follow the job: `/jobs/<id>`, as in the `Location` header.
    pub location: String,
}

impl Accepted {
    #[must_use]
    pub fn new(id: JobId, status: &'static str) -> Self {
        Self {
            id: id.to_string(),
            status,
            location: format!("/jobs/{id}"),
        }
    }
}

/// How the script declares its entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum MainKind {
    #[serde(rename = "def")]
    Def,
    #[serde(rename = "async def")]
    AsyncDef,
}

impl From<&MainSignature> for MainKind {
    fn from(main: &MainSignature) -> Self {
        if main.is_async {
            Self::AsyncDef
        } else {
            Self::Def
        }
    }
}

/// The answer of `POST /validate` for a script that would be queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Validated {
    /// Always `true`; a script that fails validation gets an error answer instead.
    pub ok: bool,
    pub main: MainKind,
}

/// The answer of `GET /health` and `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceStatus {
    /// `ok` (`/health`) or `ready` (`/ready`).
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// A string schema that takes one of `values`, or also `null` when `nullable`.
fn string_enum(values: Vec<&'static str>, nullable: bool) -> ObjectBuilder {
    let schema_type = if nullable {
        utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])
    } else {
        Type::String.into()
    };
    let mut values: Vec<serde_json::Value> = values.into_iter().map(Into::into).collect();
    if nullable {
        values.push(serde_json::Value::Null);
    }
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(values))
}

/// `status` of a job: one of [`JobStatus::ALL`].
pub(crate) fn job_status_schema() -> impl Into<RefOr<Schema>> {
    string_enum(JobStatus::ALL.map(JobStatus::as_str).to_vec(), false).description(Some(
        "Where the job is in its life; all but `queued` and `running` are final.",
    ))
}

/// The `status` query parameter of `GET /jobs`, declared as the closed set it is.
pub(crate) struct StatusFilter;

impl utoipa::PartialSchema for StatusFilter {
    fn schema() -> RefOr<Schema> {
        string_enum(JobStatus::ALL.map(JobStatus::as_str).to_vec(), false)
            .build()
            .into()
    }
}

impl ToSchema for StatusFilter {}

/// `error_kind` of a job: one of [`ErrorKind::ALL`], or `null`.
fn error_kind_schema() -> impl Into<RefOr<Schema>> {
    string_enum(ErrorKind::ALL.map(ErrorKind::as_str).to_vec(), true).description(Some(
        "Why the job did not succeed; stable. `null` unless it failed.",
    ))
}

/// `code` of an `/execute` answer: every code [`execute_status`] can give.
fn execute_code_schema() -> impl Into<RefOr<Schema>> {
    let mut codes: Vec<&'static str> = ErrorKind::ALL.map(ErrorKind::as_str).to_vec();
    codes.push(FAILED_WITHOUT_KIND);
    string_enum(codes, false).description(Some(
        "Why an `/execute` job did not succeed; stable. Absent when it succeeded.",
    ))
}

/// The `/execute` code of a failed job that carries no error kind.
const FAILED_WITHOUT_KIND: &str = "failed";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl<'a> JobView<'a> {
    #[must_use]
    pub fn new(job: &'a Job) -> Self {
        let failure = job.failure.as_ref();
        let position = failure.and_then(|f| f.position);
        Self {
            id: job.id.to_string(),
            code: None,
            status: job.status.as_str(),
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            args: job.args.as_deref(),
            result: job.result.as_deref(),
            stdout: job.stdout.as_ref().map(|o| o.text.as_str()),
            stdout_truncated: job.stdout.as_ref().is_some_and(|o| o.truncated),
            stderr: job.stderr.as_ref().map(|o| o.text.as_str()),
            stderr_truncated: job.stderr.as_ref().is_some_and(|o| o.truncated),
            error: failure.map(|f| f.message.as_str()),
            error_kind: failure.map(|f| f.kind.as_str()),
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            exit_code: job.usage.exit_code,
            signal: job.usage.signal.as_deref(),
            duration_ms: job.usage.wall_ms,
            cpu_ms: job.usage.cpu_ms,
            peak_memory_bytes: job.usage.peak_memory_bytes,
            timeout: job.limits.timeout.as_secs_f64(),
            memory_mb: job.limits.memory_mb,
            attempt: job.attempt,
            worker_id: job.worker_id.as_deref(),
            request_id: job.request_id.as_deref(),
            webhook: job.webhook.as_ref().map(|webhook| WebhookView {
                url: &webhook.url,
                status: webhook.state.as_str(),
                attempts: webhook.attempts,
                last_error: webhook.last_error.as_deref(),
                delivered_at: webhook.delivered_at.map(rfc3339),
            }),
        }
    }
}

/// A job as `GET /jobs` lists it: state and timings, no script, result or output.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = JobSummary)]
pub struct JobSummaryView<'a> {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(schema_with = job_status_schema)]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required)]
    pub started_at: Option<String>,
    #[schema(format = DateTime, required)]
    pub finished_at: Option<String>,
    /// Why the job did not succeed; stable.
    #[schema(schema_with = error_kind_schema, required)]
    pub error_kind: Option<&'static str>,
    /// Wall time in the sandbox.
    #[schema(required)]
    pub duration_ms: Option<u64>,
    /// The job's time limit, in seconds.
    pub timeout: f64,
    /// The job's memory limit, in MiB.
    pub memory_mb: u32,
    /// Runs so far.
    pub attempt: u32,
    /// The worker that ran (or runs) the job.
    #[schema(required)]
    pub worker_id: Option<&'a str>,
    /// The `x-request-id` of the request that created the job.
    #[schema(required)]
    pub request_id: Option<&'a str>,
}

impl<'a> JobSummaryView<'a> {
    #[must_use]
    pub fn new(job: &'a JobSummary) -> Self {
        Self {
            id: job.id.to_string(),
            status: job.status.as_str(),
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            error_kind: job.error_kind.map(ErrorKind::as_str),
            duration_ms: job.wall_ms,
            timeout: job.limits.timeout.as_secs_f64(),
            memory_mb: job.limits.memory_mb,
            attempt: job.attempt,
            worker_id: job.worker_id.as_deref(),
            request_id: job.request_id.as_deref(),
        }
    }
}

/// One page of `GET /jobs`; `next_cursor` is `null` on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage<'a> {
    pub jobs: Vec<JobSummaryView<'a>>,
    /// Pass as `cursor` to get the next page.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

/// The status `/execute` answers for a finished job, and the stable `code` it adds when the
/// job did not succeed.
#[must_use]
pub fn execute_status(job: &Job) -> (StatusCode, Option<&'static str>) {
    let kind = job.failure.as_ref().map(|f| f.kind);
    match (job.status, kind) {
        (JobStatus::Succeeded, _) => (StatusCode::OK, None),
        (JobStatus::TimedOut, _) => (StatusCode::REQUEST_TIMEOUT, Some("timeout")),
        (JobStatus::Cancelled, _) => (StatusCode::CONFLICT, Some("cancelled")),
        (_, Some(ErrorKind::SyntaxError)) => (StatusCode::BAD_REQUEST, Some("syntax_error")),
        (_, Some(ErrorKind::MissingMain)) => (StatusCode::BAD_REQUEST, Some("missing_main")),
        (_, Some(ErrorKind::SandboxError)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Some("sandbox_error"))
        }
        (_, Some(ErrorKind::WorkerLost)) => (StatusCode::SERVICE_UNAVAILABLE, Some("worker_lost")),
        (_, Some(kind)) => (StatusCode::UNPROCESSABLE_ENTITY, Some(kind.as_str())),
        (_, None) => (StatusCode::UNPROCESSABLE_ENTITY, Some(FAILED_WITHOUT_KIND)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::job::{Failure, JobId, Limits, Usage};
    use shared::tenant::Tenant;

    use super::*;

    fn job(status: JobStatus, kind: Option<ErrorKind>) -> Job {
        Job {
            id: JobId::new(),
            status,
            limits: Limits {
                timeout: Duration::from_secs(10),
                memory_mb: 256,
            },
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            worker_id: None,
            attempt: 1,
            result: None,
            failure: kind.map(|kind| Failure {
                kind,
                message: "m".into(),
                position: None,
            }),
            stdout: None,
            stderr: None,
            usage: Usage::default(),
            request_id: None,
            tenant: Tenant::NONE,
            args: None,
            webhook: None,
        }
    }

    #[test]
    fn every_execute_code_is_in_the_documented_enum() {
        let schema = serde_json::to_value(execute_code_schema().into()).expect("serializes");
        let documented = schema["enum"].as_array().expect("an enum");
        let kinds = ErrorKind::ALL.map(Some).into_iter().chain([None]);
        for (status, kind) in JobStatus::ALL
            .into_iter()
            .flat_map(|status| kinds.clone().map(move |kind| (status, kind)))
        {
            if let (_, Some(code)) = execute_status(&job(status, kind)) {
                assert!(
                    documented.contains(&serde_json::json!(code)),
                    "{code} ({status:?}, {kind:?}) is not in {schema}"
                );
            }
        }
    }

    #[test]
    fn each_ending_maps_to_its_status() {
        let cases = [
            (JobStatus::Succeeded, None, 200),
            (JobStatus::TimedOut, Some(ErrorKind::Timeout), 408),
            (JobStatus::Failed, Some(ErrorKind::SyntaxError), 400),
            (JobStatus::Failed, Some(ErrorKind::Exception), 422),
            (JobStatus::Failed, Some(ErrorKind::ResultNotJson), 422),
            (JobStatus::Failed, Some(ErrorKind::Exited), 422),
            (JobStatus::Failed, Some(ErrorKind::MemoryLimit), 422),
            (JobStatus::Failed, Some(ErrorKind::Killed), 422),
        ];
        for (status, kind, expected) in cases {
            assert_eq!(
                execute_status(&job(status, kind)).0.as_u16(),
                expected,
                "{status:?} {kind:?}"
            );
        }
    }

    #[test]
    fn main_kind_serializes_as_python_keywords() {
        assert_eq!(
            serde_json::to_string(&MainKind::Def).ok().as_deref(),
            Some("\"def\"")
        );
        assert_eq!(
            serde_json::to_string(&MainKind::AsyncDef).ok().as_deref(),
            Some("\"async def\"")
        );
    }

    #[test]
    fn main_kind_says_whether_main_is_async() {
        let main = |is_async| MainSignature {
            is_async,
            parameters: Vec::new(),
        };
        assert_eq!(MainKind::from(&main(false)), MainKind::Def);
        assert_eq!(MainKind::from(&main(true)), MainKind::AsyncDef);
    }
}
