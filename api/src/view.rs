//! The JSON shape of a job, as `GET /jobs/<id>` and `/execute` report it, and which HTTP
//! status `/execute` answers for each way a job can end.

use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use shared::job::{ErrorKind, Job, JobStatus};

/// A job as clients see it. Fields that do not apply yet are `null`.
#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    pub id: String,
    /// Stable failure code, set only on `/execute` answers for jobs that did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    pub status: &'static str,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub result: Option<&'a RawValue>,
    pub stdout: Option<&'a str>,
    pub stdout_truncated: bool,
    pub stderr: Option<&'a str>,
    pub stderr_truncated: bool,
    pub error: Option<&'a str>,
    pub error_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<&'a str>,
    pub duration_ms: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub timeout: f64,
    pub memory_mb: u32,
    pub attempt: u32,
    pub worker_id: Option<&'a str>,
}

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
        }
    }
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
        (_, None) => (StatusCode::UNPROCESSABLE_ENTITY, Some("failed")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::job::{Failure, JobId, Limits, Usage};

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
}
