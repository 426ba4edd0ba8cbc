//! `JobStore` on Postgres, for many API and worker processes on many machines. Claims use
//! `FOR UPDATE SKIP LOCKED`; `LISTEN/NOTIFY` wakes idle workers and waiting API requests.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{require_migrations, JobStore, Schema, StoreError, StoreEvents, StoreOptions};
use crate::job::{
    ClaimedJob, ErrorKind, Failure, Job, JobId, JobStatus, Lease, Limits, NewJob, Outcome, Output,
    SourcePosition, Usage,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Notification channel: "jobs were queued" (no payload).
const QUEUED_CHANNEL: &str = "runbox_queued";
/// Notification channel: "job <id> finished" (payload: the id).
const FINISHED_CHANNEL: &str = "runbox_finished";

/// The jobs table in a Postgres database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Poked on every enqueue; a background task turns each burst into one NOTIFY.
    enqueued: Arc<Notify>,
    events: Option<StoreEvents>,
}

impl PgStore {
    /// Connects a pool to `url` and, if asked, a listener connection.
    ///
    /// # Errors
    /// When the database is unreachable or the schema is missing under
    /// [`Schema::RequireCurrent`].
    pub async fn connect(
        url: &str,
        schema: Schema,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        if schema == Schema::Migrate {
            create_database_if_missing(url).await;
        }
        let statement_timeout = format!("{}", options.statement_timeout.as_millis().max(1));
        let connect = PgConnectOptions::from_str(url)?
            .application_name("runbox")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        match schema {
            // sqlx holds an advisory lock while migrating, so replicas starting together
            // apply each migration once.
            Schema::Migrate => MIGRATOR
                .run(&pool)
                .await
                .map_err(|e| StoreError::Schema(e.to_string()))?,
            Schema::RequireCurrent => {
                let applied: Vec<i64> =
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                        .fetch_all(&pool)
                        .await
                        .unwrap_or_default();
                require_migrations(&MIGRATOR, &applied)?;
            }
        }

        let enqueued = Arc::new(Notify::new());
        tokio::spawn(send_queued_notifications(
            pool.clone(),
            Arc::clone(&enqueued),
        ));

        let mut channels = Vec::new();
        if options.listen_queued {
            channels.push(QUEUED_CHANNEL);
        }
        if options.listen_finished {
            channels.push(FINISHED_CHANNEL);
        }
        let events = if channels.is_empty() {
            None
        } else {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all(channels).await?;
            let events = StoreEvents::default();
            tokio::spawn(relay_notifications(listener, events.clone()));
            Some(events)
        };
        Ok(Self {
            pool,
            enqueued,
            events,
        })
    }
}

/// Lets `DATABASE_URL=postgres://…/runbox make run` work on a server where that database does
/// not exist yet. Failures (no CREATEDB right, a race with another replica) are left to the
/// connect that follows, which reports them.
async fn create_database_if_missing(url: &str) {
    use sqlx::migrate::MigrateDatabase;
    if let Ok(false) = sqlx::Postgres::database_exists(url).await {
        match sqlx::Postgres::create_database(url).await {
            Ok(()) => tracing::info!("created the jobs database"),
            Err(e) => tracing::warn!(error = %e, "could not create the jobs database"),
        }
    }
}

/// One NOTIFY per burst of enqueues: `Notify` keeps a single permit however many enqueues
/// happen while a NOTIFY is in flight.
async fn send_queued_notifications(pool: PgPool, enqueued: Arc<Notify>) {
    loop {
        enqueued.notified().await;
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(&pool)
            .await
        {
            // Workers' backstop poll picks the jobs up anyway.
            tracing::warn!(error = %e, "could not notify workers of queued jobs");
        }
    }
}

/// Forwards notifications to in-process waiters. sqlx re-connects and re-listens by itself;
/// whatever was sent meanwhile is lost, so every waiter is woken to re-check.
async fn relay_notifications(mut listener: PgListener, events: StoreEvents) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if notification.channel() == QUEUED_CHANNEL {
                    events.queued.notify_one();
                } else if let Ok(id) = notification.payload().parse::<JobId>() {
                    let _ = events.finished.send(id);
                }
            }
            Ok(None) => {
                tracing::warn!("notification connection lost; reconnecting");
                events.queued.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "notification listener failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Postgres text cannot hold NUL characters; scripts can print them.
fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn lease_deadline(lease_for: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn to_u64(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

fn to_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn limits_from_row(row: &PgRow) -> Result<Limits, StoreError> {
    let timeout_ms: i64 = row.try_get("timeout_ms")?;
    let memory_mb: i32 = row.try_get("memory_mb")?;
    Ok(Limits {
        timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)),
        memory_mb: to_u32(memory_mb),
    })
}

fn output_from_row(row: &PgRow, text: &str, truncated: &str) -> Result<Option<Output>, StoreError> {
    let text: Option<String> = row.try_get(text)?;
    let truncated: Option<bool> = row.try_get(truncated)?;
    Ok(text.map(|text| Output {
        text,
        truncated: truncated.unwrap_or(false),
    }))
}

fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
    let status: String = row.try_get("status")?;
    let status = JobStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?;
    let result: Option<String> = row.try_get("result")?;
    let result = result
        .map(RawValue::from_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("result: {e}")))?;
    let error_kind: Option<String> = row.try_get("error_kind")?;
    let failure = match error_kind {
        None => None,
        Some(kind) => {
            let line: Option<i32> = row.try_get("error_line")?;
            let column: Option<i32> = row.try_get("error_column")?;
            Some(Failure {
                kind: ErrorKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("error_kind {kind:?}")))?,
                message: row
                    .try_get::<Option<String>, _>("error")?
                    .unwrap_or_default(),
                position: match (line, column) {
                    (Some(line), Some(column)) => Some(SourcePosition {
                        line: to_u32(line),
                        column: to_u32(column),
                    }),
                    _ => None,
                },
            })
        }
    };
    Ok(Job {
        id: JobId(row.try_get("id")?),
        status,
        limits: limits_from_row(row)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        worker_id: row.try_get("worker_id")?,
        attempt: to_u32(row.try_get("attempt")?),
        result,
        failure,
        stdout: output_from_row(row, "stdout", "stdout_truncated")?,
        stderr: output_from_row(row, "stderr", "stderr_truncated")?,
        usage: Usage {
            wall_ms: to_u64(row.try_get("wall_ms")?),
            cpu_ms: to_u64(row.try_get("cpu_ms")?),
            peak_memory_bytes: to_u64(row.try_get("peak_memory_bytes")?),
            exit_code: row.try_get("exit_code")?,
            signal: row.try_get("signal")?,
        },
    })
}

fn fenced(rows_affected: u64, lease: &Lease) -> Result<(), StoreError> {
    if rows_affected == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(lease.job_id))
    }
}

#[async_trait]
impl JobStore for PgStore {
    async fn enqueue(&self, job: &NewJob) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (id, status, script, timeout_ms, memory_mb, created_at, attempt) \
             VALUES ($1, 'queued', $2, $3, $4, $5, 0)",
        )
        .bind(job.id.0)
        .bind(&job.script)
        .bind(millis(job.limits.timeout))
        .bind(i32::try_from(job.limits.memory_mb).unwrap_or(i32::MAX))
        .bind(job.created_at)
        .execute(&self.pool)
        .await?;
        self.enqueued.notify_one();
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
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
        // FOR UPDATE SKIP LOCKED: the subquery locks the rows it picks, and concurrent
        // claimers skip locked rows instead of waiting on them, so each queued job goes to
        // exactly one claimer and claimers never queue behind each other. The partial index
        // jobs_queued_by_age serves the ORDER BY.
        let rows = sqlx::query(
            "UPDATE jobs SET status = 'running', worker_id = $1, attempt = attempt + 1, \
                 started_at = $2, lease_expires_at = $3 \
             WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' \
                          ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, script, timeout_ms, memory_mb, attempt, created_at",
        )
        .bind(worker_id)
        .bind(Utc::now())
        .bind(lease_deadline(lease_for))
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let created_at: DateTime<Utc> = row.try_get("created_at")?;
                let id: Uuid = row.try_get("id")?;
                Ok((
                    created_at,
                    ClaimedJob {
                        lease: Lease {
                            job_id: JobId(id),
                            worker_id: worker_id.to_owned(),
                            attempt: to_u32(row.try_get("attempt")?),
                        },
                        script: row.try_get("script")?,
                        limits: limits_from_row(row)?,
                    },
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING gives no order guarantee; hand jobs out oldest first.
        claimed.sort_by_key(|(created_at, _)| *created_at);
        Ok(claimed.into_iter().map(|(_, job)| job).collect())
    }

    async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 \
             WHERE id = $2 AND worker_id = $3 AND attempt = $4 AND status = 'running'",
        )
        .bind(lease_deadline(lease_for))
        .bind(lease.job_id.0)
        .bind(&lease.worker_id)
        .bind(i32::try_from(lease.attempt).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)
    }

    async fn finish(&self, lease: &Lease, outcome: &Outcome) -> Result<(), StoreError> {
        let (result, failure) = match &outcome.result {
            Ok(value) => (Some(value.get()), None),
            Err(failure) => (None, Some(failure)),
        };
        let position = failure.and_then(|f| f.position);
        let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        // The NOTIFY rides in the same statement, so it is sent exactly when the write
        // commits; a fenced-off write selects no row and notifies nobody.
        let row = sqlx::query(
            "WITH done AS ( \
                 UPDATE jobs SET status = $1, finished_at = $2, lease_expires_at = NULL, \
                     result = $3, error = $4, error_kind = $5, error_line = $6, \
                     error_column = $7, stdout = $8, stdout_truncated = $9, stderr = $10, \
                     stderr_truncated = $11, exit_code = $12, signal = $13, wall_ms = $14, \
                     cpu_ms = $15, peak_memory_bytes = $16 \
                 WHERE id = $17 AND worker_id = $18 AND attempt = $19 AND status = 'running' \
                 RETURNING id) \
             SELECT pg_notify($20, id::text) FROM done",
        )
        .bind(outcome.status().as_str())
        .bind(Utc::now())
        .bind(result)
        .bind(failure.map(|f| pg_text(&f.message)))
        .bind(failure.map(|f| f.kind.as_str()))
        .bind(position.map(|p| to_i32(p.line)))
        .bind(position.map(|p| to_i32(p.column)))
        .bind(pg_text(&outcome.stdout.text))
        .bind(outcome.stdout.truncated)
        .bind(pg_text(&outcome.stderr.text))
        .bind(outcome.stderr.truncated)
        .bind(outcome.usage.exit_code)
        .bind(outcome.usage.signal.as_deref())
        .bind(to_i64(outcome.usage.wall_ms))
        .bind(to_i64(outcome.usage.cpu_ms))
        .bind(to_i64(outcome.usage.peak_memory_bytes))
        .bind(lease.job_id.0)
        .bind(&lease.worker_id)
        .bind(to_i32(lease.attempt))
        .bind(FINISHED_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        fenced(u64::from(row.is_some()), lease)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        // The attempt is handed back too: a run cut short by shutdown does not count.
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, attempt = attempt - 1, \
                 started_at = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND worker_id = $2 AND attempt = $3 AND status = 'running'",
        )
        .bind(lease.job_id.0)
        .bind(&lease.worker_id)
        .bind(i32::try_from(lease.attempt).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected(), lease)?;
        self.enqueued.notify_one();
        Ok(())
    }

    async fn terminal_among(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let finished: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE id = ANY($1) AND status NOT IN ('queued', 'running')",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(finished.into_iter().map(JobId).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn events(&self) -> Option<StoreEvents> {
        self.events.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_replaced_for_postgres_text() {
        assert_eq!(pg_text("a\0b"), "a\u{fffd}b");
        assert!(matches!(pg_text("plain"), Cow::Borrowed("plain")));
    }
}
