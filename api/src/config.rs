//! API settings: where to listen, request limits, how long `/execute` waits.

use std::time::Duration;

use shared::config::{LogConfig, StoreConfig};

use crate::auth::{AuthMode, MetricsAuth};
use crate::keys_command::Command;
use crate::quota::QuotaDefaults;
use crate::webhooks::WebhookConfig;

/// Everything the `api` binary is configured with; `api --help` lists it.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "api",
    about = "HTTP API that validates Python scripts and queues them as jobs."
)]
pub struct ApiConfig {
    /// Without a command, the API serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub store: StoreConfig,

    #[command(flatten)]
    pub log: LogConfig,

    #[command(flatten)]
    pub limits: RequestLimits,

    #[command(flatten)]
    pub quotas: QuotaDefaults,

    #[command(flatten)]
    pub webhooks: WebhookConfig,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Whether job routes need `Authorization: Bearer <key>`: `required` or `off`. Default:
    /// `off` when HOST is a loopback address, `required` otherwise.
    #[arg(long, env = "AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// Who may read `/metrics`: `open` (anyone who reaches the port) or `admin` (an admin API
    /// key as a bearer token, whatever AUTH says).
    #[arg(long, env = "METRICS_AUTH", value_enum, default_value = "open")]
    pub metrics_auth: MetricsAuth,

    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Extra time `/execute` waits beyond the job's timeout (queueing, sandbox start) before
    /// answering 202 with the job id, in seconds.
    #[arg(long, env = "QUEUE_GRACE_SECS", default_value_t = 30.0)]
    pub queue_grace_secs: f64,

    /// How often waiting requests (`/execute`, `GET /jobs/<id>?wait=`) check for finished jobs
    /// when the store pushes no wake-ups (`DATABASE_NOTIFICATIONS=false`, or inotify
    /// unavailable), in milliseconds. With them, on either database, they check on each
    /// wake-up and every `DATABASE_BACKSTOP_POLL_MS`.
    #[arg(long, env = "COMPLETION_POLL_MS", default_value_t = 10)]
    pub completion_poll_ms: u64,

    /// Requests served at once; past it, new requests get 503 `overloaded` at once.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Longest any request may take, in seconds (`/execute` answers 202 well before this).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 120)]
    pub request_timeout_secs: u64,

    /// After SIGTERM/SIGINT, how long in-flight requests may finish, in seconds.
    #[arg(long, env = "API_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Queued jobs past which `POST /jobs` and `/execute` answer 429.
    #[arg(long, env = "MAX_QUEUED_JOBS", default_value_t = 10_000)]
    pub max_queued_jobs: u64,

    /// How long an `Idempotency-Key` keeps naming its job, in seconds.
    #[arg(long, env = "IDEMPOTENCY_WINDOW_SECS", default_value_t = 86_400)]
    pub idempotency_window_secs: u64,

    /// Finished jobs are deleted this many seconds after they finished (default 7 days).
    #[arg(long, env = "RETENTION_SECS", default_value_t = 604_800)]
    pub retention_secs: u64,

    /// Cancel the job of an `/execute` request whose client disconnects before the answer.
    #[arg(long, env = "EXECUTE_CANCEL_ON_DISCONNECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub execute_cancel_on_disconnect: bool,

    /// Scripts validated at the same time (default: number of CPUs).
    #[arg(long, env = "VALIDATION_CONCURRENCY")]
    pub validation_concurrency: Option<usize>,
}

impl ApiConfig {
    /// `AUTH`, or what HOST implies.
    #[must_use]
    pub fn auth_mode(&self) -> AuthMode {
        self.auth
            .unwrap_or_else(|| AuthMode::default_for(&self.host))
    }

    #[must_use]
    pub fn queue_grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.queue_grace_secs).unwrap_or(Duration::from_secs(30))
    }

    #[must_use]
    pub fn completion_poll(&self) -> Duration {
        Duration::from_millis(self.completion_poll_ms.max(1))
    }

    #[must_use]
    pub fn validation_concurrency(&self) -> usize {
        self.validation_concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
            .max(1)
    }
}

/// Bounds on what a request may ask for.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RequestLimits {
    /// Largest accepted script, in bytes of UTF-8.
    #[arg(long, env = "MAX_SCRIPT_BYTES", default_value_t = 256 * 1024)]
    pub max_script_bytes: usize,

    /// Timeout of a job whose request names none, in seconds.
    #[arg(long, env = "DEFAULT_TIMEOUT_SECS", default_value_t = 10.0)]
    pub default_timeout_secs: f64,

    /// Largest timeout a request may ask for, in seconds.
    #[arg(long, env = "MAX_TIMEOUT_SECS", default_value_t = 60.0)]
    pub max_timeout_secs: f64,

    /// Memory of a job whose request names none, in MiB.
    #[arg(long, env = "DEFAULT_MEMORY_MB", default_value_t = 256)]
    pub default_memory_mb: u32,

    /// Smallest memory a request may ask for, in MiB.
    #[arg(long, env = "MIN_MEMORY_MB", default_value_t = 32)]
    pub min_memory_mb: u32,

    /// Largest memory a request may ask for, in MiB.
    #[arg(long, env = "MAX_MEMORY_MB", default_value_t = 1024)]
    pub max_memory_mb: u32,

    /// Largest `args` object, in bytes of its JSON text.
    #[arg(long, env = "MAX_ARGS_BYTES", default_value_t = 64 * 1024)]
    pub max_args_bytes: usize,
}

impl RequestLimits {
    /// Largest request body read: room for the script JSON-escaped (a character can take up
    /// to six bytes as `\uXXXX`), the args, and the other fields. Larger bodies get a 413
    /// unread.
    #[must_use]
    pub fn max_body_bytes(&self) -> usize {
        self.max_script_bytes
            .saturating_mul(6)
            .saturating_add(self.max_args_bytes)
            .saturating_add(64 * 1024)
    }
}
