//! Settings both binaries share, parsed by clap from flags or environment variables.

use std::fmt;
use std::time::Duration;

use crate::store::StoreOptions;

/// Where the jobs table lives and how to talk to it.
#[derive(Clone, clap::Args)]
pub struct StoreConfig {
    /// Database URL: `postgres://user@host/db`, `sqlite://path/to/file.db` (default) or a
    /// plain file path.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/jobs.db")]
    pub database_url: String,

    /// Largest number of pooled database connections per process.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Seconds to wait for a pooled connection (and, on SQLite, for the write lock) before an
    /// operation fails; the pool reconnects by itself when the database comes back.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = 5)]
    pub database_acquire_timeout_secs: u64,

    /// Postgres `statement_timeout` for every statement, in seconds.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_SECS", default_value_t = 30)]
    pub database_statement_timeout_secs: u64,

    /// Wait for pushed wake-ups instead of polling: Postgres `LISTEN/NOTIFY`, or on SQLite
    /// inotify watches on signal files beside the database, which processes write after
    /// committing queued or finished jobs. Turn off behind poolers that do not pass notifications (PgBouncer in transaction
    /// mode); processes then poll at their fast poll interval.
    #[arg(long, env = "DATABASE_NOTIFICATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub database_notifications: bool,

    /// With wake-ups on (either database), how often processes still poll in case one was
    /// lost, in milliseconds.
    #[arg(long, env = "DATABASE_BACKSTOP_POLL_MS", default_value_t = 2000)]
    pub database_backstop_poll_ms: u64,
}

/// The process that opens the store, which decides the wake-ups it listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUser {
    /// Waits for jobs to finish (`/execute`, long polls).
    Api,
    /// Waits for jobs to be queued.
    Worker,
}

impl StoreConfig {
    /// Connection options for `user`.
    #[must_use]
    pub fn options(&self, user: StoreUser) -> StoreOptions {
        let (listen_queued, listen_finished) = match user {
            StoreUser::Api => (false, true),
            StoreUser::Worker => (true, false),
        };
        StoreOptions {
            max_connections: self.database_max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.database_acquire_timeout_secs.max(1)),
            statement_timeout: Duration::from_secs(self.database_statement_timeout_secs.max(1)),
            listen_queued: self.database_notifications && listen_queued,
            listen_finished: self.database_notifications && listen_finished,
            tenant_max_running: 0,
        }
    }

    /// Poll interval used as a backstop when wake-ups are available.
    #[must_use]
    pub fn backstop_poll(&self) -> Duration {
        Duration::from_millis(self.database_backstop_poll_ms.max(1))
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &redact_credentials(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("database_notifications", &self.database_notifications)
            .finish_non_exhaustive()
    }
}

/// Hides the `user:password@` part of a URL so it can be logged.
#[must_use]
pub fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, clap::Args)]
pub struct LogConfig {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Which log lines are written: a `tracing` filter such as `warn` or `info,api=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(
            redact_credentials("postgres://app:s3cret@db:5432/jobs"),
            "postgres://***@db:5432/jobs"
        );
        assert_eq!(
            redact_credentials("sqlite://data/jobs.db"),
            "sqlite://data/jobs.db"
        );
    }
}
