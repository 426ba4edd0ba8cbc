//! `JobStore` on an embedded SQLite file: WAL so readers never block the writer, a busy
//! timeout so several processes on one machine can share the file, and signal files beside it
//! (see `signal_files`) so they wake each other without polling.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio_util::sync::DropGuard;

use super::signal_files::{self, Change, Listen, Signals};
use super::{
    decode, require_migrations, JobStore, KeyStore, Reaped, Schema, StoreError, StoreEvents,
    StoreOptions, TenantLoad, BUCKET_RETRIES, CANCELLED_MESSAGE, WORKER_LOST_MESSAGE,
};
use crate::job::{
    Cancelled, ClaimedJob, Enqueued, ErrorKind, Job, JobId, JobStatus, JobSummary, Lease, Limits,
    ListQuery, NewJob, Outcome, OutputChunk, Usage, Webhook,
};
use crate::tenant::{ApiKey, HashedKey, KeyId, QuotaOverrides, Revoked, Tenant};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The jobs table in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// [`StoreOptions::tenant_max_running`].
    tenant_max_running: u32,
    events: Option<StoreEvents>,
    /// Raised after commits that queue or finish jobs; `None` when the files cannot be
    /// written (other processes then find those changes by their backstop poll).
    signals: Option<Arc<Signals>>,
    /// Ends the signal watch when the last clone of the store is dropped.
    _watch: Option<Arc<DropGuard>>,
    /// Ends the background checkpoints when the last clone of the store is dropped.
    _checkpoints: Option<Arc<DropGuard>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database `url` points at: `sqlite://path`, `sqlite:path`
    /// or a plain file path. With `listen_queued` or `listen_finished` it also watches the
    /// matching signal files; if inotify refuses, it logs a warning and callers poll.
    ///
    /// # Errors
    /// When the file cannot be opened or the schema is missing under [`Schema::RequireCurrent`].
    pub async fn connect(
        url: &str,
        schema: Schema,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let connect = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across process crashes in WAL mode; only power loss can drop
            // the last commits, the usual trade for a queue.
            .synchronous(SqliteSynchronous::Normal)
            // No commit checkpoints the log itself (SQLite's default, every 1000 pages, makes
            // the commit that crosses the mark copy them into the database and sync it: a few
            // milliseconds on one request in every few dozen); `checkpoint_in_background` does.
            .pragma("wal_autocheckpoint", "0")
            .busy_timeout(options.acquire_timeout);
        let database = connect.get_filename().to_owned();
        if let Some(parent) = database.parent() {
            create_parent_dir(parent)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        match schema {
            Schema::Migrate => MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| StoreError::Schema(e.to_string()))?,
            Schema::RequireCurrent => require_current_schema(&pool).await?,
        }
        // Beside the file a symlinked path resolves to, as SQLite's own log is, so every
        // process finds the same files whatever path it was given.
        let database = std::fs::canonicalize(&database).unwrap_or(database);
        // An in-memory database is this process's alone: nobody else to wake, and no file to
        // put signals beside.
        if in_memory(&url) {
            return Ok(Self {
                pool,
                tenant_max_running: options.tenant_max_running,
                events: None,
                signals: None,
                _watch: None,
                _checkpoints: None,
            });
        }
        let signals = Signals::open(&database)
            .inspect_err(|e| {
                tracing::warn!(
                    error = %e,
                    database = %database.display(),
                    "cannot write the SQLite signal files; other processes will notice this \
                     one's changes only by polling"
                );
            })
            .ok()
            .map(Arc::new);
        let (events, watch) = match watch(&database, options) {
            Some((events, guard)) => (Some(events), Some(Arc::new(guard))),
            None => (None, None),
        };
        let checkpoints = checkpoint_in_background(pool.clone(), &database);
        Ok(Self {
            pool,
            tenant_max_running: options.tenant_max_running,
            events,
            signals,
            _watch: watch,
            _checkpoints: Some(Arc::new(checkpoints)),
        })
    }
}

/// How often each process copies the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Checkpoints the write-ahead log of `database` every [`CHECKPOINT_EVERY`] when it was
/// written since the last look, off every request's and job's path, until the returned guard
/// is dropped. PASSIVE: it never waits for, nor blocks, readers or writers; what it cannot
/// copy yet, a later one does. Every process that opens the database does this, so the log
/// stays short whichever of them is running.
fn checkpoint_in_background(pool: SqlitePool, database: &Path) -> DropGuard {
    let mut log = database.as_os_str().to_owned();
    log.push("-wal");
    let log = PathBuf::from(log);
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let mut seen = None;
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            }
            // A look at the file, not a query: an idle service asks the database nothing.
            let written = std::fs::metadata(&log).and_then(|m| m.modified()).ok();
            if written.is_none() || written == seen {
                continue;
            }
            seen = written;
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "SQLite checkpoint failed; the next one retries");
            }
        }
    });
    stop.drop_guard()
}

/// Whether a `sqlite:` URL names an in-memory database (`sqlite::memory:`, `?mode=memory`),
/// which sqlx opens under a made-up file name.
fn in_memory(url: &str) -> bool {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    path == ":memory:" || query.split('&').any(|pair| pair == "mode=memory")
}

/// The signal watch `options` ask for, if any and if inotify allows it.
fn watch(database: &Path, options: &StoreOptions) -> Option<(StoreEvents, DropGuard)> {
    let listen = Listen {
        queued: options.listen_queued,
        finished: options.listen_finished,
    };
    if !listen.queued && !listen.finished {
        return None;
    }
    signal_files::listen(database, listen)
        .inspect_err(|e| {
            tracing::warn!(
                error = %e,
                database = %database.display(),
                "cannot watch the SQLite database for changes; polling instead"
            );
        })
        .ok()
}

async fn require_current_schema(pool: &SqlitePool) -> Result<(), StoreError> {
    // No migrations table at all reads as "nothing applied".
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    require_migrations(&MIGRATOR, &applied)
}

fn create_parent_dir(parent: &Path) -> Result<(), StoreError> {
    if parent.as_os_str().is_empty() || parent.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(parent).map_err(|e| {
        StoreError::Database(sqlx::Error::Configuration(
            format!("cannot create {}: {e}", parent.display()).into(),
        ))
    })
}

/// Fixed-width UTC text, so timestamps compare correctly as strings inside SQLite.
fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp {text:?}: {e}")))
}

fn parse_optional_timestamp(
    row: &SqliteRow,
    column: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.as_deref().map(parse_timestamp).transpose()
}

fn lease_deadline(lease_for: Duration) -> String {
    let lease_for = chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX);
    timestamp(Utc::now() + lease_for)
}

fn limits_from_row(row: &SqliteRow) -> Result<Limits, StoreError> {
    let timeout_ms: i64 = row.try_get("timeout_ms")?;
    let memory_mb: i64 = row.try_get("memory_mb")?;
    Ok(Limits {
        timeout: decode::timeout(timeout_ms),
        memory_mb: u32::try_from(memory_mb)
            .map_err(|_| StoreError::Corrupt(format!("memory_mb {memory_mb}")))?,
    })
}

fn job_id_from_row(row: &SqliteRow) -> Result<JobId, StoreError> {
    let id: String = row.try_get("id")?;
    id.parse()
        .map_err(|e| StoreError::Corrupt(format!("job id {id:?}: {e}")))
}

fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
    let failure = decode::failure(
        row.try_get("error_kind")?,
        row.try_get("error")?,
        row.try_get("error_line")?,
        row.try_get("error_column")?,
    )?;
    let attempt: i64 = row.try_get("attempt")?;
    Ok(Job {
        id: job_id_from_row(row)?,
        status: decode::status(&row.try_get::<String, _>("status")?)?,
        limits: limits_from_row(row)?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        started_at: parse_optional_timestamp(row, "started_at")?,
        finished_at: parse_optional_timestamp(row, "finished_at")?,
        worker_id: row.try_get("worker_id")?,
        attempt: u32::try_from(attempt).unwrap_or(0),
        result: decode::result(row.try_get("result")?)?,
        failure,
        stdout: decode::output(row.try_get("stdout")?, row.try_get("stdout_truncated")?),
        stderr: decode::output(row.try_get("stderr")?, row.try_get("stderr_truncated")?),
        usage: Usage {
            wall_ms: decode::unsigned(row.try_get("wall_ms")?),
            cpu_ms: decode::unsigned(row.try_get("cpu_ms")?),
            peak_memory_bytes: decode::unsigned(row.try_get("peak_memory_bytes")?),
            exit_code: row
                .try_get::<Option<i64>, _>("exit_code")?
                .and_then(|c| i32::try_from(c).ok()),
            signal: row.try_get("signal")?,
        },
        request_id: row.try_get("request_id")?,
        tenant: Tenant::from_stored(&row.try_get::<String, _>("owner")?),
        args: decode::result(row.try_get("args")?)?,
        webhook: webhook_from_row(row)?,
    })
}

fn webhook_from_row(row: &SqliteRow) -> Result<Option<Webhook>, StoreError> {
    let Some(url) = row.try_get::<Option<String>, _>("webhook_url")? else {
        return Ok(None);
    };
    let attempts: i64 = row.try_get("webhook_attempts")?;
    Ok(Some(Webhook {
        url,
        state: decode::webhook_state(row.try_get::<Option<&str>, _>("webhook_state")?)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.try_get("webhook_last_error")?,
        delivered_at: parse_optional_timestamp(row, "webhook_delivered_at")?,
    }))
}

fn summary_from_row(row: &SqliteRow) -> Result<JobSummary, StoreError> {
    let error_kind: Option<String> = row.try_get("error_kind")?;
    let attempt: i64 = row.try_get("attempt")?;
    Ok(JobSummary {
        id: job_id_from_row(row)?,
        status: decode::status(&row.try_get::<String, _>("status")?)?,
        limits: limits_from_row(row)?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        started_at: parse_optional_timestamp(row, "started_at")?,
        finished_at: parse_optional_timestamp(row, "finished_at")?,
        worker_id: row.try_get("worker_id")?,
        attempt: u32::try_from(attempt).unwrap_or(0),
        error_kind: error_kind.as_deref().and_then(ErrorKind::parse),
        wall_ms: decode::unsigned(row.try_get("wall_ms")?),
        request_id: row.try_get("request_id")?,
    })
}

impl SqliteStore {
    /// Wakes the processes waiting for `change`; call once its commit has returned.
    fn raise(&self, change: Change) {
        if let Some(signals) = &self.signals {
            signals.raise(change);
        }
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
        let idempotency = job.idempotency.as_ref();
        if let Some(idempotency) = idempotency {
            // An expired key is forgotten, so the unique index lets it name a new job.
            let window =
                chrono::Duration::from_std(idempotency.window).unwrap_or(chrono::Duration::MAX);
            sqlx::query(
                "UPDATE jobs SET idempotency_key = NULL \
                 WHERE owner = ?1 AND idempotency_key = ?2 AND created_at < ?3",
            )
            .bind(job.tenant.as_stored())
            .bind(&idempotency.key)
            .bind(timestamp(job.created_at - window))
            .execute(&self.pool)
            .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, status, script, timeout_ms, memory_mb, created_at, attempt, \
                 idempotency_key, request_hash, request_id, owner, args, webhook_url, \
                 webhook_state, webhook_next_at) \
             VALUES (?1, 'queued', ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?9, ?10, ?11, \
                 CASE WHEN ?11 IS NULL THEN NULL ELSE 'pending' END, \
                 CASE WHEN ?11 IS NULL THEN NULL ELSE ?5 END) \
             ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        )
        .bind(job.id.to_string())
        .bind(&job.script)
        .bind(decode::millis(job.limits.timeout))
        .bind(i64::from(job.limits.memory_mb))
        .bind(timestamp(job.created_at))
        .bind(idempotency.map(|i| i.key.as_str()))
        .bind(idempotency.map(|i| i.request_hash.as_str()))
        .bind(job.request_id.as_deref())
        .bind(job.tenant.as_stored())
        .bind(job.args.as_deref())
        .bind(job.webhook_url.as_deref())
        .execute(&self.pool)
        .await?
        .rows_affected();
        match idempotency {
            Some(idempotency) if inserted == 0 => {
                let row = sqlx::query(
                    "SELECT id, request_hash FROM jobs WHERE owner = ?1 AND idempotency_key = ?2",
                )
                .bind(job.tenant.as_stored())
                .bind(&idempotency.key)
                .fetch_one(&self.pool)
                .await?;
                let hash: Option<String> = row.try_get("request_hash")?;
                Ok(Enqueued::Existing {
                    id: job_id_from_row(&row)?,
                    same_request: hash.as_deref() == Some(idempotency.request_hash.as_str()),
                })
            }
            _ => {
                self.raise(Change::Queued);
                Ok(Enqueued::Created)
            }
        }
    }

    async fn cancel(&self, id: JobId) -> Result<Cancelled, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?1, lease_expires_at = NULL, \
                 error_kind = 'cancelled', error = ?2 \
             WHERE id = ?3 AND status IN ('queued', 'running')",
        )
        .bind(timestamp(Utc::now()))
        .bind(CANCELLED_MESSAGE)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            self.raise(Change::Finished);
            return Ok(Cancelled::Done);
        }
        Ok(match self.get(id).await? {
            Some(job) => Cancelled::AlreadyFinished(job.status),
            None => Cancelled::NotFound,
        })
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        let depth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(depth).unwrap_or(0))
    }

    async fn queued_of(&self, tenant: Tenant) -> Result<u64, StoreError> {
        let depth: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued' AND owner = ?1")
                .bind(tenant.as_stored())
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(depth).unwrap_or(0))
    }

    async fn busiest_tenants(&self, limit: u32) -> Result<Vec<TenantLoad>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT owner, sum(status = 'queued'), sum(status = 'running') FROM jobs \
             WHERE status IN ('queued', 'running') GROUP BY owner",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(decode::busiest(rows, limit))
    }

    async fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM jobs WHERE id IN ( \
                 SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1 \
                 AND status NOT IN ('queued', 'running') LIMIT ?2)",
        )
        .bind(timestamp(cutoff))
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn append_output(&self, job: JobId, chunks: &[OutputChunk]) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut sql = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO job_output (job_id, seq, stream, text) ",
        );
        sql.push_values(chunks, |mut row, chunk| {
            row.push_bind(job.to_string())
                .push_bind(i64::from(chunk.seq))
                .push_bind(chunk.stream.as_str())
                .push_bind(&chunk.text);
        });
        sql.build().execute(&self.pool).await?;
        self.raise(Change::Finished);
        Ok(())
    }

    async fn output_after(
        &self,
        job: JobId,
        after: u32,
        limit: u32,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, stream, text FROM job_output WHERE job_id = ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3",
        )
        .bind(job.to_string())
        .bind(i64::from(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode::output_chunk).collect()
    }

    async fn claim_webhooks(&self, lock_for: Duration, max: u32) -> Result<Vec<Job>, StoreError> {
        let now = Utc::now();
        let rows = sqlx::query(
            "UPDATE jobs SET webhook_locked_until = ?1, webhook_attempts = webhook_attempts + 1 \
             WHERE id IN (SELECT id FROM jobs \
                 WHERE webhook_state = 'pending' AND webhook_next_at <= ?2 \
                 AND status NOT IN ('queued', 'running') \
                 AND (webhook_locked_until IS NULL OR webhook_locked_until < ?2) \
                 ORDER BY webhook_next_at LIMIT ?3) \
             RETURNING *",
        )
        .bind(timestamp(
            now + chrono::Duration::from_std(lock_for).unwrap_or(chrono::Duration::MAX),
        ))
        .bind(timestamp(now))
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn webhook_delivered(&self, id: JobId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET webhook_state = 'delivered', webhook_delivered_at = ?1, \
                 webhook_locked_until = NULL, webhook_last_error = NULL WHERE id = ?2",
        )
        .bind(timestamp(Utc::now()))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn webhook_failed(
        &self,
        id: JobId,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET webhook_state = CASE WHEN ?1 IS NULL THEN 'failed' ELSE 'pending' END, \
                 webhook_next_at = coalesce(?1, webhook_next_at), webhook_locked_until = NULL, \
                 webhook_last_error = ?2 WHERE id = ?3",
        )
        .bind(retry_at.map(timestamp))
        .bind(error)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>, StoreError> {
        // Only the filters asked for, so each shape walks its index (jobs_newest_first,
        // jobs_by_status_newest_first, or jobs_by_owner_newest_first) from the cursor: no OFFSET, no
        // scan of earlier pages.
        let mut sql = QueryBuilder::<Sqlite>::new(concat!(list_sql!(), "WHERE 1 = 1"));
        if let Some(tenant) = query.tenant {
            sql.push(" AND owner = ").push_bind(tenant.as_stored());
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(after) = query.after {
            sql.push(" AND (created_at, id) < (")
                .push_bind(timestamp(after.created_at))
                .push(", ")
                .push_bind(after.id.to_string())
                .push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn claim(
        &self,
        worker_id: &str,
        max: u32,
        lease_for: Duration,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // A read first: an UPDATE takes SQLite's one write lock even when it matches nothing,
        // and idle workers, woken by every commit, would contend with the writers that woke
        // them. A job queued just after this read wakes them again.
        let any_queued: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued')")
                .fetch_one(&self.pool)
                .await?;
        if !any_queued {
            return Ok(Vec::new());
        }
        // One statement: SQLite runs it under its single writer lock, so two workers can never
        // both move the same queued row to running. It walks the tenants with queued jobs
        // (a skip scan of jobs_queued_by_owner: one index seek per tenant), takes each one's
        // oldest `max` (an index range up to its `max`-th oldest), and ranks them by the
        // tenant's running jobs plus the job's place in its tenant's line: the least served
        // tenant first, tenants interleaved, none past its running quota (`cap`, 0 for none).
        // Its cost grows with tenants and `max`, not with queued jobs. SQLite's planner
        // would pick the newest-first list indexes (or build one per statement) for these
        // lookups, so the partial index of queued jobs is named.
        let rows = sqlx::query(
            "WITH RECURSIVE owners(owner) AS ( \
                 SELECT min(owner) FROM jobs INDEXED BY jobs_queued_by_owner WHERE status = 'queued' \
                 UNION ALL \
                 SELECT (SELECT min(owner) FROM jobs INDEXED BY jobs_queued_by_owner \
                         WHERE status = 'queued' AND owner > owners.owner) \
                 FROM owners WHERE owners.owner IS NOT NULL), \
             tenants AS MATERIALIZED ( \
                 SELECT owner, \
                     (SELECT count(*) FROM jobs \
                      WHERE status = 'running' AND jobs.owner = owners.owner) AS running, \
                     CASE WHEN owner = '' THEN 0 ELSE coalesce( \
                         (SELECT max_running FROM api_keys WHERE id = owners.owner), ?5) \
                     END AS cap, \
                     (SELECT created_at FROM jobs INDEXED BY jobs_queued_by_owner \
                      WHERE status = 'queued' AND jobs.owner = owners.owner \
                      ORDER BY created_at, id LIMIT 1 OFFSET ?4 - 1) AS last_at \
                 FROM owners WHERE owner IS NOT NULL), \
             candidates AS ( \
                 SELECT j.id, j.created_at, t.running, t.cap, \
                     row_number() OVER (PARTITION BY t.owner ORDER BY j.created_at, j.id) AS place \
                 FROM tenants t JOIN jobs j INDEXED BY jobs_queued_by_owner \
                     ON j.owner = t.owner AND j.status = 'queued' \
                     AND j.created_at <= coalesce(t.last_at, '9999')) \
             UPDATE jobs SET status = 'running', worker_id = ?1, attempt = attempt + 1, \
                 started_at = ?2, lease_expires_at = ?3 \
             WHERE id IN (SELECT id FROM candidates \
                          WHERE cap <= 0 OR running + place <= cap \
                          ORDER BY running + place, created_at, id LIMIT ?4) \
             RETURNING id, script, timeout_ms, memory_mb, attempt, created_at, request_id, args",
        )
        .bind(worker_id)
        .bind(timestamp(Utc::now()))
        .bind(lease_deadline(lease_for))
        .bind(i64::from(max))
        .bind(i64::from(self.tenant_max_running))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let attempt: i64 = row.try_get("attempt")?;
                let created_at: String = row.try_get("created_at")?;
                Ok(ClaimedJob {
                    lease: Lease {
                        job_id: job_id_from_row(row)?,
                        worker_id: worker_id.to_owned(),
                        attempt: u32::try_from(attempt).unwrap_or(0),
                    },
                    script: row.try_get("script")?,
                    limits: limits_from_row(row)?,
                    created_at: parse_timestamp(&created_at)?,
                    request_id: row.try_get("request_id")?,
                    args: row.try_get("args")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING gives no order guarantee; hand jobs out oldest first.
        claimed.sort_by_key(|job| job.created_at);
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?1 \
             WHERE id = ?2 AND worker_id = ?3 AND attempt = ?4 AND status = 'running'",
        )
        .bind(lease_deadline(lease_for))
        .bind(lease.job_id.to_string())
        .bind(&lease.worker_id)
        .bind(i64::from(lease.attempt))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(lease.job_id))
        }
    }

    async fn finish_many(&self, finished: &[(Lease, Outcome)]) -> Result<Vec<JobId>, StoreError> {
        let finished_at = timestamp(Utc::now());
        let mut written = Vec::with_capacity(finished.len());
        // One transaction, one commit for the whole batch.
        let mut tx = self.pool.begin().await?;
        for (lease, outcome) in finished {
            let (result, failure) = match &outcome.result {
                Ok(value) => (Some(value.get()), None),
                Err(failure) => (None, Some(failure)),
            };
            let position = failure.and_then(|f| f.position);
            let done = sqlx::query(
                "UPDATE jobs SET status = ?1, finished_at = ?2, lease_expires_at = NULL, \
                     completions = completions + 1, \
                     result = ?3, error = ?4, error_kind = ?5, error_line = ?6, \
                     error_column = ?7, stdout = ?8, stdout_truncated = ?9, stderr = ?10, \
                     stderr_truncated = ?11, exit_code = ?12, signal = ?13, wall_ms = ?14, \
                     cpu_ms = ?15, peak_memory_bytes = ?16 \
                 WHERE id = ?17 AND worker_id = ?18 AND attempt = ?19 AND status = 'running'",
            )
            .bind(outcome.status().as_str())
            .bind(&finished_at)
            .bind(result)
            .bind(failure.map(|f| f.message.as_str()))
            .bind(failure.map(|f| f.kind.as_str()))
            .bind(position.map(|p| i64::from(p.line)))
            .bind(position.map(|p| i64::from(p.column)))
            .bind(&outcome.stdout.text)
            .bind(outcome.stdout.truncated)
            .bind(&outcome.stderr.text)
            .bind(outcome.stderr.truncated)
            .bind(outcome.usage.exit_code)
            .bind(outcome.usage.signal.as_deref())
            .bind(decode::signed(outcome.usage.wall_ms))
            .bind(decode::signed(outcome.usage.cpu_ms))
            .bind(decode::signed(outcome.usage.peak_memory_bytes))
            .bind(lease.job_id.to_string())
            .bind(&lease.worker_id)
            .bind(i64::from(lease.attempt))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                written.push(lease.job_id);
            }
        }
        tx.commit().await?;
        if !written.is_empty() {
            self.raise(Change::Finished);
        }
        Ok(written)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        // The attempt is handed back too: a run cut short by shutdown does not count.
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, attempt = attempt - 1, \
                 started_at = NULL, lease_expires_at = NULL \
             WHERE id = ?1 AND worker_id = ?2 AND attempt = ?3 AND status = 'running'",
        )
        .bind(lease.job_id.to_string())
        .bind(&lease.worker_id)
        .bind(i64::from(lease.attempt))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            self.raise(Change::Queued);
            Ok(())
        } else {
            Err(StoreError::LeaseLost(lease.job_id))
        }
    }

    async fn reap_expired(&self, max_attempts: u32) -> Result<Reaped, StoreError> {
        let now = timestamp(Utc::now());
        // Fixed-width timestamps compare correctly as text.
        let failed = sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = ?1, lease_expires_at = NULL, \
                 error_kind = 'worker_lost', error = ?2 \
             WHERE status = 'running' AND lease_expires_at < ?1 AND attempt >= ?3",
        )
        .bind(&now)
        .bind(WORKER_LOST_MESSAGE)
        .bind(i64::from(max_attempts))
        .execute(&self.pool)
        .await?
        .rows_affected();
        let requeued = sqlx::query(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, started_at = NULL, \
                 lease_expires_at = NULL \
             WHERE status = 'running' AND lease_expires_at < ?1",
        )
        .bind(&now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if failed > 0 {
            self.raise(Change::Finished);
        }
        if requeued > 0 {
            self.raise(Change::Queued);
        }
        Ok(Reaped { requeued, failed })
    }

    async fn terminal_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        let mut finished = Vec::new();
        // Stay well under SQLite's bound-parameter limit.
        for chunk in ids.chunks(500) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT id FROM jobs WHERE status NOT IN ('queued', 'running') AND id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            query.push(")");
            for row in query.build().fetch_all(&self.pool).await? {
                finished.push(job_id_from_row(&row)?);
            }
        }
        Ok(finished)
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        decode::status_counts(rows)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn events(&self) -> Option<StoreEvents> {
        self.events.clone()
    }
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    let id: String = row.try_get("id")?;
    let count = |column: &str| -> Result<Option<u32>, StoreError> {
        let value: Option<i64> = row.try_get(column)?;
        Ok(value.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    };
    let max_timeout_ms: Option<i64> = row.try_get("max_timeout_ms")?;
    Ok(ApiKey {
        id: id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("key id {id:?}: {e}")))?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        admin: row.try_get("admin")?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
        revoked_at: parse_optional_timestamp(row, "revoked_at")?,
        quotas: QuotaOverrides {
            max_running: count("max_running")?,
            max_queued: count("max_queued")?,
            submissions_per_minute: count("submissions_per_minute")?,
            max_timeout: max_timeout_ms.map(decode::timeout),
            max_memory_mb: count("max_memory_mb")?,
        },
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, new: &HashedKey) -> Result<(), StoreError> {
        let key = &new.key;
        let quotas = &key.quotas;
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, admin, created_at, max_running, \
                 max_queued, submissions_per_minute, max_timeout_ms, max_memory_mb) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(key.id.to_string())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&new.hash)
        .bind(key.admin)
        .bind(timestamp(key.created_at))
        .bind(quotas.max_running.map(i64::from))
        .bind(quotas.max_queued.map(i64::from))
        .bind(quotas.submissions_per_minute.map(i64::from))
        .bind(quotas.max_timeout.map(decode::millis))
        .bind(quotas.max_memory_mb.map(i64::from))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: KeyId) -> Result<Revoked, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL")
                .bind(timestamp(Utc::now()))
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 1 {
            return Ok(Revoked::Done);
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM api_keys WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(if exists.is_some() {
            Revoked::Already
        } else {
            Revoked::NotFound
        })
    }

    async fn active_key_by_hash(&self, hash: &str) -> Result<Option<HashedKey>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(HashedKey {
                key: key_from_row(&row)?,
                hash: row.try_get("hash")?,
            })
        })
        .transpose()
    }

    async fn has_active_key(&self) -> Result<bool, StoreError> {
        let any: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(any.is_some())
    }

    async fn take_submission(
        &self,
        id: KeyId,
        per_minute: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, StoreError> {
        // Compare-and-set on the key's row: a process whose read went stale (another took a
        // token meanwhile) reads again, so no token is handed out twice.
        for _ in 0..BUCKET_RETRIES {
            let row: Option<(Option<f64>, Option<String>)> =
                sqlx::query_as("SELECT bucket_tokens, bucket_at FROM api_keys WHERE id = ?1")
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
            let Some((tokens, at)) = row else {
                return Ok(None);
            };
            let elapsed = match at.as_deref().map(parse_timestamp).transpose()? {
                Some(at) => (now - at).to_std().unwrap_or_default(),
                None => Duration::ZERO,
            };
            let available = super::refill(tokens, elapsed, per_minute);
            if available < 1.0 {
                return Ok(Some(super::until_next_token(available, per_minute)));
            }
            let taken = sqlx::query(
                "UPDATE api_keys SET bucket_tokens = ?1, bucket_at = ?2 \
                 WHERE id = ?3 AND bucket_tokens IS ?4 AND bucket_at IS ?5",
            )
            .bind(available - 1.0)
            .bind(timestamp(now))
            .bind(id.to_string())
            .bind(tokens)
            .bind(at)
            .execute(&self.pool)
            .await?;
            if taken.rows_affected() == 1 {
                return Ok(None);
            }
        }
        Ok(Some(Duration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_urls_are_told_from_files() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://x.db?mode=memory&cache=shared",
        ] {
            assert!(in_memory(url), "{url}");
        }
        for url in [
            "sqlite://data/jobs.db",
            "sqlite:jobs.db?mode=rwc",
            "sqlite:///tmp/memory.db",
        ] {
            assert!(!in_memory(url), "{url}");
        }
    }

    #[tokio::test]
    async fn an_in_memory_store_writes_no_signal_files() {
        let options = StoreOptions {
            listen_queued: true,
            listen_finished: true,
            ..StoreOptions::default()
        };
        let store = SqliteStore::connect("sqlite::memory:", Schema::Migrate, &options)
            .await
            .expect("open store");
        assert!(store.events().is_none(), "nobody else can write to it");
        // sqlx names an in-memory database `file:sqlx-in-memory-<n>`.
        let strays: Vec<_> = std::fs::read_dir(".")
            .expect("the working directory")
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with("-queued") || name.ends_with("-finished"))
            .collect();
        assert!(strays.is_empty(), "signal files were created: {strays:?}");
    }

    #[tokio::test]
    async fn the_write_ahead_log_is_copied_into_the_database_in_the_background() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("jobs.db");
        let url = format!("sqlite://{}", file.display());
        let store = SqliteStore::connect(&url, Schema::Migrate, &StoreOptions::default())
            .await
            .expect("open store");
        // No commit copies the log into the database (the schema went to the log too), and the
        // pool stays open, so nothing but the background checkpoint can fill the file.
        let size = || std::fs::metadata(&file).map_or(0, |m| m.len());
        let deadline = std::time::Instant::now() + CHECKPOINT_EVERY * 5;
        while size() <= 4096 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file still holds {} bytes",
                size()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(store);
    }

    #[tokio::test]
    async fn the_signal_watch_ends_when_the_last_clone_of_the_store_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let options = StoreOptions {
            listen_queued: true,
            listen_finished: true,
            ..StoreOptions::default()
        };
        let store = SqliteStore::connect(&url, Schema::Migrate, &options)
            .await
            .expect("open store");
        let events = store
            .events()
            .expect("a listening store watches its signal files");
        let clone = store.clone();
        drop(store);
        drop(clone);
        // The watch task holds the last other reference to the signals; it is gone once the
        // task has ended and closed its inotify descriptor.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&events.queued) > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the signal watch outlived its store"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
