//! The job model: what a client submits, what a worker claims, and how a run ends.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::tenant::Tenant;

/// Identifier of a job, a random UUID chosen at enqueue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh random id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where a job is in its life. `Queued` and `Running` are the only non-terminal states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
    ];

    /// The spelling used in the API and in the jobs table.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the spelling returned by [`JobStatus::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// True once the job can no longer change.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// Why a finished job did not succeed. Stable strings: clients branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The sandbox's own `compile()` rejected the script.
    SyntaxError,
    /// The module has no callable `main` at run time.
    MissingMain,
    /// `main()` (or the module body) raised.
    Exception,
    /// `main()` returned a value that has no strict JSON form.
    ResultNotJson,
    /// Wall-clock or CPU time limit reached.
    Timeout,
    /// The job's memory cgroup killed it.
    MemoryLimit,
    /// Killed by a signal for another reason.
    Killed,
    /// The script ended the interpreter itself (`sys.exit`, `os._exit`).
    Exited,
    /// Output or result exceeded what the service keeps.
    OutputLimit,
    /// The worker running the job disappeared.
    WorkerLost,
    /// The sandbox could not be set up; not the script's fault.
    SandboxError,
    /// The job was cancelled.
    Cancelled,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [Self; 12] = [
        Self::SyntaxError,
        Self::MissingMain,
        Self::Exception,
        Self::ResultNotJson,
        Self::Timeout,
        Self::MemoryLimit,
        Self::Killed,
        Self::Exited,
        Self::OutputLimit,
        Self::WorkerLost,
        Self::SandboxError,
        Self::Cancelled,
    ];

    /// The spelling used in the API and in the jobs table.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SyntaxError => "syntax_error",
            Self::MissingMain => "missing_main",
            Self::Exception => "exception",
            Self::ResultNotJson => "result_not_json",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::Killed => "killed",
            Self::Exited => "exited",
            Self::OutputLimit => "output_limit",
            Self::WorkerLost => "worker_lost",
            Self::SandboxError => "sandbox_error",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the spelling returned by [`ErrorKind::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    /// The terminal status a job with this error ends in.
    #[must_use]
    pub fn status(self) -> JobStatus {
        match self {
            Self::Timeout => JobStatus::TimedOut,
            Self::Cancelled => JobStatus::Cancelled,
            _ => JobStatus::Failed,
        }
    }
}

/// Resource limits a job runs under, already checked against the server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time the script may run.
    pub timeout: Duration,
    /// Memory the sandbox may use, in MiB.
    pub memory_mb: u32,
}

/// A job as submitted, before it is stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub script: String,
    pub limits: Limits,
    pub created_at: DateTime<Utc>,
    /// Set when the client sent an `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
    /// The `x-request-id` of the request that created the job, for tying logs together.
    pub request_id: Option<String>,
    /// Whose job it is; idempotency keys are per tenant.
    pub tenant: Tenant,
    /// Keyword arguments for `main`: a JSON object's text, as the client sent it.
    pub args: Option<String>,
    /// Where to POST the job once it is terminal.
    pub webhook_url: Option<String>,
}

/// A client's idempotency key and what it was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// Digest of the request (script and limits); the same key with another digest is refused.
    pub request_hash: String,
    /// Keys older than this are forgotten and may be reused.
    pub window: Duration,
}

/// What storing a new job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was stored.
    Created,
    /// The idempotency key already names a job; nothing was stored.
    Existing { id: JobId, same_request: bool },
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The job is now `cancelled`; a worker running it stops within a heartbeat.
    Done,
    /// The job had already finished with this status; nothing changed.
    AlreadyFinished(JobStatus),
    NotFound,
}

/// The right to write a job back: only the worker and attempt that claimed it hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: JobId,
    pub worker_id: String,
    pub attempt: u32,
}

/// A job handed to a worker by a claim.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub lease: Lease,
    /// When the job was queued (for the worker's queue-wait metric).
    pub created_at: DateTime<Utc>,
    pub script: String,
    pub limits: Limits,
    /// The `x-request-id` of the request that created the job, for its log lines.
    pub request_id: Option<String>,
    /// Keyword arguments for `main`: a JSON object's text.
    pub args: Option<String>,
}

/// Captured output of one stream, capped by the worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Output {
    pub text: String,
    pub truncated: bool,
}

/// Which of a job's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stdout" => Some(Self::Stdout),
            "stderr" => Some(Self::Stderr),
            _ => None,
        }
    }
}

/// Output a running job printed, shipped while it runs; `seq` orders a job's chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub seq: u32,
    pub stream: OutputStream,
    pub text: String,
}

/// Where in the script a syntax error was found (1-based, like CPython).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub line: u32,
    pub column: u32,
}

/// Measurements of one sandbox run; each is `None` where the platform could not measure it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub wall_ms: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
}

/// Why a run failed, in words for people and a kind for programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    pub position: Option<SourcePosition>,
}

/// How one run of a job ended. A failing script is an outcome, not an error.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `Ok` holds `main()`'s return value as JSON text.
    pub result: Result<Box<RawValue>, Failure>,
    pub stdout: Output,
    pub stderr: Output,
    pub usage: Usage,
}

impl Outcome {
    /// A run the sandbox could not carry out (`sandbox_error`); nothing of the script's is kept.
    #[must_use]
    pub fn sandbox_error(message: impl Into<String>) -> Self {
        Self {
            result: Err(Failure {
                kind: ErrorKind::SandboxError,
                message: message.into(),
                position: None,
            }),
            stdout: Output::default(),
            stderr: Output::default(),
            usage: Usage::default(),
        }
    }

    /// The terminal status this outcome puts the job in.
    #[must_use]
    pub fn status(&self) -> JobStatus {
        match &self.result {
            Ok(_) => JobStatus::Succeeded,
            Err(failure) => failure.kind.status(),
        }
    }
}

/// Everything known about a job, as reported by `GET /jobs/<id>`.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub status: JobStatus,
    pub limits: Limits,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub attempt: u32,
    pub result: Option<Box<RawValue>>,
    pub failure: Option<Failure>,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
    pub usage: Usage,
    pub request_id: Option<String>,
    pub tenant: Tenant,
    /// Keyword arguments for `main`, as the client sent them.
    pub args: Option<Box<RawValue>>,
    /// The job's webhook and how its delivery stands, if the request named one.
    pub webhook: Option<Webhook>,
}

/// A job's webhook: where its end is announced, and how far that got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub state: WebhookState,
    /// Deliveries tried so far.
    pub attempts: u32,
    /// Why the last try failed.
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Where a webhook's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookState {
    /// Waiting for the job to end, or being retried.
    Pending,
    Delivered,
    /// Given up on after the retry period.
    Failed,
}

impl WebhookState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A job as `GET /jobs` lists it: its state and timings, without script or output.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub id: JobId,
    pub status: JobStatus,
    pub limits: Limits,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub attempt: u32,
    pub error_kind: Option<ErrorKind>,
    pub wall_ms: Option<u64>,
    pub request_id: Option<String>,
}

/// A position in the newest-first order of jobs: listing continues with the jobs after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: DateTime<Utc>,
    pub id: JobId,
}

impl ListCursor {
    /// The cursor that continues a listing after `job`.
    #[must_use]
    pub fn after(job: &JobSummary) -> Self {
        Self {
            created_at: job.created_at,
            id: job.id,
        }
    }
}

/// Opaque to clients: microseconds since the epoch and the id, which both stores keep exactly.
impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.0.simple()
        )
    }
}

impl FromStr for ListCursor {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (micros, id) = s.split_once('_').ok_or(())?;
        let micros: i64 = micros.parse().map_err(|_| ())?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or(())?,
            id: id.parse().map_err(|_| ())?,
        })
    }
}

/// Which jobs `GET /jobs` asks for: newest first, optionally of one status, after a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this tenant's jobs; `None` lists every tenant's.
    pub tenant: Option<Tenant>,
    pub status: Option<JobStatus>,
    pub after: Option<ListCursor>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_spellings_round_trip() {
        for status in JobStatus::ALL {
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn error_kind_spellings_match_serde() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn list_cursors_round_trip_and_reject_garbage() {
        let cursor = ListCursor {
            created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("valid"),
            id: JobId::new(),
        };
        assert_eq!(cursor.to_string().parse::<ListCursor>(), Ok(cursor));
        for bad in [
            "",
            "x",
            "12_",
            "_abc",
            "12_not-a-uuid",
            "9999999999999999999_00",
        ] {
            assert!(bad.parse::<ListCursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_queued_and_running_are_not_terminal() {
        assert!(!JobStatus::Queued.is_terminal());
        assert!(!JobStatus::Running.is_terminal());
        assert!(JobStatus::Cancelled.is_terminal());
        assert_eq!(ErrorKind::Timeout.status(), JobStatus::TimedOut);
        assert_eq!(ErrorKind::Exception.status(), JobStatus::Failed);
    }
}
