//! Settings both binaries share, parsed by clap from flags or environment variables.

use std::fmt;

/// Where the jobs table lives.
#[derive(Clone, clap::Args)]
pub struct StoreConfig {
    /// Database URL: `sqlite://path/to/file.db` (default) or a plain file path.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/jobs.db")]
    pub database_url: String,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &redact_credentials(&self.database_url))
            .finish()
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
