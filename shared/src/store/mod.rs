//! The jobs table behind one trait, so the API and workers never see which database holds it.

/// The columns `GET /jobs` shows, the same on both backends; each adds its filter and order.
macro_rules! list_sql {
    () => {
        "SELECT id, status, timeout_ms, memory_mb, created_at, started_at, finished_at, \
             worker_id, attempt, error_kind, wall_ms, request_id FROM jobs "
    };
}

mod decode;
mod postgres;
mod signal_files;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch, Notify};

use chrono::{DateTime, Utc};

use crate::job::{
    Cancelled, ClaimedJob, Enqueued, Job, JobId, JobStatus, JobSummary, Lease, ListQuery, NewJob,
    Outcome, OutputChunk,
};
use crate::tenant::{ApiKey, HashedKey, KeyId, Revoked, Tenant};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Failures of the store itself; a failing script is never one of these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying or checking migrations failed.
    #[error("database schema: {0}")]
    Schema(String),
    /// A row did not decode into the job model.
    #[error("corrupt job row: {0}")]
    Corrupt(String),
    /// The write-back was fenced off: the job is no longer running under this lease.
    #[error("lease on job {0} is no longer held")]
    LeaseLost(JobId),
    /// `DATABASE_URL` has a scheme that names no backend (a typo such as `postgress://`);
    /// holds the scheme only, never the rest of the URL, which may carry a password.
    #[error(
        "DATABASE_URL has the scheme `{0}`, which runbox does not know: use postgres://… (or \
         postgresql://…) for Postgres, sqlite://PATH, sqlite:PATH or a plain file path for SQLite"
    )]
    UnknownScheme(String),
}

/// The database a `DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// Reads the backend from `database_url`'s scheme: `postgres://` or `postgresql://` for
    /// Postgres, `sqlite:` (`sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:`) or no scheme at
    /// all (a plain file path) for SQLite.
    ///
    /// # Errors
    /// [`StoreError::UnknownScheme`] for any other scheme. A relative path whose first
    /// component holds a `:` reads as a scheme too; write it `./PATH` or `sqlite:PATH`.
    pub fn of(database_url: &str) -> Result<Self, StoreError> {
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            return Ok(Self::Postgres);
        }
        if database_url.starts_with("sqlite:") {
            return Ok(Self::Sqlite);
        }
        match scheme(database_url) {
            Some(scheme) => Err(StoreError::UnknownScheme(scheme.to_owned())),
            None => Ok(Self::Sqlite),
        }
    }
}

/// The scheme of `url` as RFC 3986 spells one (a letter, then letters, digits, `+`, `-` or
/// `.`, then `:`), or `None` when `url` does not start with one and so is a file path.
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (starts_with_letter && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .then_some(scheme)
}

/// Whether connecting should bring the schema up to date or only check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations (the API does this at start).
    Migrate,
    /// Fail with a clear message when migrations are missing (workers never migrate).
    RequireCurrent,
}

/// What one reaper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Jobs put back in the queue for another attempt.
    pub requeued: u64,
    /// Jobs that ran out of attempts and failed with `worker_lost`.
    pub failed: u64,
}

/// Times a submission retries its token-bucket update when other processes keep updating
/// the same key's bucket first.
const BUCKET_RETRIES: usize = 16;

/// The message a cancelled job gets.
pub const CANCELLED_MESSAGE: &str = "cancelled by request";

/// The message a job gets when it fails because its workers kept disappearing.
pub const WORKER_LOST_MESSAGE: &str =
    "the worker running this job stopped responding on every attempt; the script may have run partly";

/// How to connect, beyond the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to wait for a pooled connection before failing the operation.
    pub acquire_timeout: Duration,
    /// Server-side limit on one statement (Postgres).
    pub statement_timeout: Duration,
    /// Subscribe to "jobs were queued" wake-ups (workers): [`StoreEvents::queued`].
    pub listen_queued: bool,
    /// Subscribe to "job finished" wake-ups (the API): [`StoreEvents::finished`] on
    /// Postgres, [`StoreEvents::changed`] on SQLite.
    pub listen_finished: bool,
    /// Jobs of one API key a claim lets run at once, unless the key sets its own; 0 for no
    /// limit. Jobs of no key (authentication off) have none.
    pub tenant_max_running: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            listen_queued: false,
            listen_finished: false,
            tenant_max_running: 0,
        }
    }
}

/// Wake-ups pushed to this process: Postgres `LISTEN/NOTIFY`, or on SQLite inotify watches on
/// the signal files that processes write after committing queued or finished jobs. Wake-ups
/// can be lost (reconnects, poolers, a removed file), so users keep a slow backstop poll.
#[derive(Debug, Clone)]
pub struct StoreEvents {
    /// Signalled when jobs may have been queued; holds one permit when nobody is waiting.
    pub queued: Arc<Notify>,
    /// Ids of jobs that just reached a terminal status (Postgres).
    pub finished: broadcast::Sender<JobId>,
    /// Ids of running jobs that just printed output (Postgres; on SQLite, `changed`).
    pub output: broadcast::Sender<JobId>,
    /// Marked changed when jobs may have finished without the store learning which (SQLite's
    /// "jobs finished" signal; a lost Postgres listener connection): subscribers re-check all the jobs
    /// they wait on. Each subscriber sees a burst of marks as one change.
    pub changed: watch::Sender<()>,
}

impl Default for StoreEvents {
    fn default() -> Self {
        Self {
            queued: Arc::new(Notify::new()),
            finished: broadcast::channel(4096).0,
            output: broadcast::channel(4096).0,
            changed: watch::Sender::new(()),
        }
    }
}

/// The API keys, beside the jobs in the same database.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key.
    async fn create_key(&self, key: &HashedKey) -> Result<(), StoreError>;

    /// Every key, revoked ones included, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key; it stops authenticating at once (API processes cache a lookup for
    /// under a second).
    async fn revoke_key(&self, id: KeyId) -> Result<Revoked, StoreError>;

    /// The unrevoked key whose secret hashes to `hash` (hex SHA-256), if any.
    async fn active_key_by_hash(&self, hash: &str) -> Result<Option<HashedKey>, StoreError>;

    /// Whether any unrevoked key exists.
    async fn has_active_key(&self) -> Result<bool, StoreError>;

    /// Takes one submission from key `id`'s token bucket, which holds up to `per_minute`
    /// tokens and refills at `per_minute` a minute. `None` when a token was taken; otherwise
    /// how long until the next one. Every API process shares the bucket.
    async fn take_submission(
        &self,
        id: KeyId,
        per_minute: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, StoreError>;
}

/// One tenant's queued and running jobs, or (`tenant: None`) those of all tenants not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLoad {
    pub tenant: Option<Tenant>,
    pub queued: u64,
    pub running: u64,
}

/// The token bucket of [`KeyStore::take_submission`]: tokens left after refilling from
/// `tokens` as of `elapsed` ago, and whether one can be taken.
#[must_use]
pub fn refill(tokens: Option<f64>, elapsed: Duration, per_minute: u32) -> f64 {
    let capacity = f64::from(per_minute);
    tokens.map_or(capacity, |tokens| {
        (tokens + elapsed.as_secs_f64() * capacity / 60.0).min(capacity)
    })
}

/// How long until a bucket holding `tokens` (< 1) has one.
#[must_use]
pub fn until_next_token(tokens: f64, per_minute: u32) -> Duration {
    let per_second = f64::from(per_minute.max(1)) / 60.0;
    Duration::try_from_secs_f64(((1.0 - tokens) / per_second).max(0.0)).unwrap_or(Duration::MAX)
}

/// The queue contract every backend implements and one conformance suite checks.
#[async_trait]
pub trait JobStore: KeyStore + Send + Sync + 'static {
    /// Stores a new job in `queued` state, unless its idempotency key already names a job
    /// created within the key's window.
    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError>;

    /// Cancels a queued or running job. A running job's worker sees its lease gone at its
    /// next heartbeat and kills the sandbox.
    async fn cancel(&self, id: JobId) -> Result<Cancelled, StoreError>;

    /// Number of queued jobs.
    async fn queue_depth(&self) -> Result<u64, StoreError>;

    /// Number of queued jobs of `tenant`.
    async fn queued_of(&self, tenant: Tenant) -> Result<u64, StoreError>;

    /// Queued and running jobs of the `limit` busiest tenants, busiest first; the last
    /// entry, `None`, sums all the others (metrics with a bounded label set).
    async fn busiest_tenants(&self, limit: u32) -> Result<Vec<TenantLoad>, StoreError>;

    /// Deletes up to `batch` finished jobs that finished before `cutoff`; returns how many.
    /// Queued and running jobs are never deleted.
    async fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError>;

    /// The job with this id, if any.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Up to `query.limit` jobs, newest first (by creation time, then id), of `query.status`
    /// if given, strictly after `query.after` in that order. Served by an index seek, however
    /// deep the page.
    async fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>, StoreError>;

    /// Atomically moves up to `max` queued jobs to `running` under `worker_id`, each with a
    /// lease valid for `lease_for` and its attempt counter incremented. Tenants are
    /// interleaved: the tenant with the fewest running jobs goes first, its oldest job first,
    /// and no tenant gets more running jobs than its `max_running` quota. With one tenant,
    /// that is oldest first.
    async fn claim(
        &self,
        worker_id: &str,
        max: u32,
        lease_for: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Extends a running job's lease.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the job is no longer running under this lease.
    async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<(), StoreError>;

    /// Records how the run ended and makes the job terminal.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the job is no longer running under this lease; nothing
    /// is written then.
    async fn finish(&self, lease: &Lease, outcome: &Outcome) -> Result<(), StoreError> {
        let written = self
            .finish_many(&[(lease.clone(), outcome.clone())])
            .await?;
        if written.contains(&lease.job_id) {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(lease.job_id))
        }
    }

    /// [`JobStore::finish`] for many jobs in one transaction; returns the ids that were
    /// written. The others were fenced off (their lease is no longer held) and left as they
    /// were.
    async fn finish_many(&self, finished: &[(Lease, Outcome)]) -> Result<Vec<JobId>, StoreError>;

    /// Puts a running job back in the queue without counting the attempt (worker shutdown).
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the job is no longer running under this lease.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Returns running jobs whose lease expired (their worker died or lost the database) to
    /// the queue with their attempt counted; those that already used `max_attempts` end
    /// `failed` with `worker_lost` instead. Safe to run from many processes at once.
    async fn reap_expired(&self, max_attempts: u32) -> Result<Reaped, StoreError>;

    /// Stores output a running job printed. Waiters on the job are woken (Postgres: NOTIFY
    /// on the output channel; SQLite: the "jobs finished" signal, after which they re-check).
    async fn append_output(&self, job: JobId, chunks: &[OutputChunk]) -> Result<(), StoreError>;

    /// Up to `limit` of the job's output chunks with `seq` above `after`, in order.
    async fn output_after(
        &self,
        job: JobId,
        after: u32,
        limit: u32,
    ) -> Result<Vec<OutputChunk>, StoreError>;

    /// Up to `max` terminal jobs whose webhook is due, each locked for `lock_for` (other
    /// processes skip it meanwhile) and its attempt counted.
    async fn claim_webhooks(&self, lock_for: Duration, max: u32) -> Result<Vec<Job>, StoreError>;

    /// Records that the job's webhook was delivered.
    async fn webhook_delivered(&self, id: JobId) -> Result<(), StoreError>;

    /// Records a failed delivery of the job's webhook: tried again at `retry_at`, or, with
    /// `None`, given up on.
    async fn webhook_failed(
        &self,
        id: JobId,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    /// Those of `ids` that have reached a terminal status.
    async fn terminal_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError>;

    /// How many jobs are in each status (statuses with none are absent).
    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError>;

    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Pushed wake-ups, when they were asked for (`StoreOptions::listen_*`) and could be set
    /// up; `None` means the caller must poll.
    fn events(&self) -> Option<StoreEvents>;
}

/// Opens the store `database_url` names (see [`Backend::of`]).
///
/// # Errors
/// When the URL's scheme names no backend, the database cannot be opened, or the schema is
/// missing or older than this build under [`Schema::RequireCurrent`].
pub async fn connect(
    database_url: &str,
    schema: Schema,
    options: &StoreOptions,
) -> Result<Arc<dyn JobStore>, StoreError> {
    Ok(match Backend::of(database_url)? {
        Backend::Postgres => Arc::new(PgStore::connect(database_url, schema, options).await?),
        Backend::Sqlite => Arc::new(SqliteStore::connect(database_url, schema, options).await?),
    })
}

/// Applied migrations against the ones this build embeds; the error tells operators what to do.
fn require_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Result<(), StoreError> {
    let missing: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "the database is missing migrations {missing:?}; start `api` once against it \
             (it applies migrations at start), then start the worker"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_name_postgres() {
        for url in [
            "postgres://runbox@127.0.0.1:5432/runbox",
            "postgresql://user:password@db-host/runbox?sslmode=require",
        ] {
            assert_eq!(Backend::of(url).expect(url), Backend::Postgres, "{url}");
        }
    }

    #[test]
    fn sqlite_urls_and_plain_paths_name_sqlite() {
        for url in [
            "sqlite://data/jobs.db",
            "sqlite:///var/lib/runbox/jobs.db",
            "sqlite:jobs.db",
            "sqlite::memory:",
            "data/jobs.db",
            "/var/lib/runbox/jobs.db",
            "./jobs:2.db",
            "/tmp/run:box/jobs.db",
            "jobs.db",
        ] {
            assert_eq!(Backend::of(url).expect(url), Backend::Sqlite, "{url}");
        }
    }

    #[test]
    fn an_unknown_scheme_is_an_error_naming_it_and_the_accepted_ones() {
        for (url, scheme) in [
            ("postgress://runbox@127.0.0.1/runbox", "postgress"),
            ("mysql://root@localhost/runbox", "mysql"),
            ("sqlite3://data/jobs.db", "sqlite3"),
            ("Postgres://runbox@127.0.0.1/runbox", "Postgres"),
            ("file:data/jobs.db", "file"),
        ] {
            let error = Backend::of(url).expect_err(url);
            assert!(
                matches!(&error, StoreError::UnknownScheme(s) if s == scheme),
                "{url}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(&format!("`{scheme}`")), "{message}");
            for accepted in [
                "postgres://",
                "postgresql://",
                "sqlite://PATH",
                "sqlite:PATH",
            ] {
                assert!(message.contains(accepted), "{message}");
            }
        }
    }

    #[test]
    fn the_unknown_scheme_error_never_shows_a_password() {
        for url in [
            "postgress://runbox:s3cret@db-host/runbox",
            "runbox:s3cret@db-host/runbox",
        ] {
            let message = Backend::of(url).expect_err(url).to_string();
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[tokio::test]
    async fn connect_refuses_an_unknown_scheme_before_opening_anything() {
        let error = connect(
            "postgress://runbox@127.0.0.1/runbox",
            Schema::Migrate,
            &StoreOptions::default(),
        )
        .await
        .err()
        .expect("an unknown scheme is refused");
        assert!(matches!(error, StoreError::UnknownScheme(_)), "{error:?}");
    }
}
