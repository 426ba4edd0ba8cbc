//! `JobStore` on Postgres, for many API and worker processes on many machines. Claims use
//! `FOR UPDATE SKIP LOCKED`; `LISTEN/NOTIFY` wakes idle workers and waiting API requests.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    decode, require_migrations, JobStore, KeyStore, Reaped, Schema, StoreError, StoreEvents,
    StoreOptions, TenantLoad, BUCKET_RETRIES, CANCELLED_MESSAGE, WORKER_LOST_MESSAGE,
};
use crate::job::{
    Cancelled, ClaimedJob, Enqueued, ErrorKind, Job, JobId, JobStatus, JobSummary, Lease, Limits,
    ListQuery, NewJob, Outcome, OutputChunk, Usage, Webhook,
};
use crate::tenant::{ApiKey, HashedKey, KeyId, QuotaOverrides, Revoked, Tenant};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Notification channel: "jobs were queued" (no payload).
const QUEUED_CHANNEL: &str = "runbox_queued";
/// Notification channel: "job <id> finished" (payload: the id).
const FINISHED_CHANNEL: &str = "runbox_finished";

/// NOTIFY channel for "this running job printed output"; the payload is the job id.
const OUTPUT_CHANNEL: &str = "runbox_output";

/// The jobs table in a Postgres database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// [`StoreOptions::tenant_max_running`].
    tenant_max_running: u32,
    /// Poked when jobs go back to the queue (released, reaped); a background task turns each
    /// burst into one NOTIFY. (A new job's NOTIFY is part of its INSERT.)
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
            channels.push(OUTPUT_CHANNEL);
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
            tenant_max_running: options.tenant_max_running,
            enqueued,
            events,
        })
    }
}

/// Queued jobs each tenant offers a claim beyond what it takes, so claimers racing for the
/// same tenant skip each other's locked rows and still find work.
const CLAIM_SPARE_CANDIDATES: i64 = 32;

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

/// One NOTIFY per burst of requeues: `Notify` keeps a single permit however many happen while
/// a NOTIFY is in flight.
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
                    let _ = if notification.channel() == OUTPUT_CHANNEL {
                        events.output.send(id)
                    } else {
                        events.finished.send(id)
                    };
                }
            }
            Ok(None) => {
                tracing::warn!("notification connection lost; reconnecting");
                events.queued.notify_one();
                events.changed.send_replace(());
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

fn to_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn limits_from_row(row: &PgRow) -> Result<Limits, StoreError> {
    let timeout_ms: i64 = row.try_get("timeout_ms")?;
    let memory_mb: i32 = row.try_get("memory_mb")?;
    Ok(Limits {
        timeout: decode::timeout(timeout_ms),
        memory_mb: to_u32(memory_mb),
    })
}

fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
    let failure = decode::failure(
        row.try_get("error_kind")?,
        row.try_get("error")?,
        row.try_get::<Option<i32>, _>("error_line")?.map(i64::from),
        row.try_get::<Option<i32>, _>("error_column")?
            .map(i64::from),
    )?;
    Ok(Job {
        id: JobId(row.try_get("id")?),
        status: decode::status(&row.try_get::<String, _>("status")?)?,
        limits: limits_from_row(row)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        worker_id: row.try_get("worker_id")?,
        attempt: to_u32(row.try_get("attempt")?),
        result: decode::result(row.try_get("result")?)?,
        failure,
        stdout: decode::output(row.try_get("stdout")?, row.try_get("stdout_truncated")?),
        stderr: decode::output(row.try_get("stderr")?, row.try_get("stderr_truncated")?),
        usage: Usage {
            wall_ms: decode::unsigned(row.try_get("wall_ms")?),
            cpu_ms: decode::unsigned(row.try_get("cpu_ms")?),
            peak_memory_bytes: decode::unsigned(row.try_get("peak_memory_bytes")?),
            exit_code: row.try_get("exit_code")?,
            signal: row.try_get("signal")?,
        },
        request_id: row.try_get("request_id")?,
        tenant: Tenant::from_stored(&row.try_get::<String, _>("owner")?),
        args: decode::result(row.try_get("args")?)?,
        webhook: webhook_from_row(row)?,
    })
}

fn webhook_from_row(row: &PgRow) -> Result<Option<Webhook>, StoreError> {
    let Some(url) = row.try_get::<Option<String>, _>("webhook_url")? else {
        return Ok(None);
    };
    Ok(Some(Webhook {
        url,
        state: decode::webhook_state(row.try_get::<Option<&str>, _>("webhook_state")?)?,
        attempts: to_u32(row.try_get("webhook_attempts")?),
        last_error: row.try_get("webhook_last_error")?,
        delivered_at: row.try_get("webhook_delivered_at")?,
    }))
}

fn summary_from_row(row: &PgRow) -> Result<JobSummary, StoreError> {
    let error_kind: Option<String> = row.try_get("error_kind")?;
    Ok(JobSummary {
        id: JobId(row.try_get("id")?),
        status: decode::status(&row.try_get::<String, _>("status")?)?,
        limits: limits_from_row(row)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        worker_id: row.try_get("worker_id")?,
        attempt: to_u32(row.try_get("attempt")?),
        error_kind: error_kind.as_deref().and_then(ErrorKind::parse),
        wall_ms: decode::unsigned(row.try_get("wall_ms")?),
        request_id: row.try_get("request_id")?,
    })
}

/// A batch of write-backs as one array per column, for `UNNEST`.
#[derive(Default)]
struct FinishColumns {
    id: Vec<Uuid>,
    worker_id: Vec<String>,
    attempt: Vec<i32>,
    status: Vec<&'static str>,
    result: Vec<Option<String>>,
    error: Vec<Option<String>>,
    error_kind: Vec<Option<&'static str>>,
    error_line: Vec<Option<i32>>,
    error_column: Vec<Option<i32>>,
    stdout: Vec<String>,
    stdout_truncated: Vec<bool>,
    stderr: Vec<String>,
    stderr_truncated: Vec<bool>,
    exit_code: Vec<Option<i32>>,
    signal: Vec<Option<String>>,
    wall_ms: Vec<Option<i64>>,
    cpu_ms: Vec<Option<i64>>,
    peak_memory_bytes: Vec<Option<i64>>,
}

impl FinishColumns {
    fn push(&mut self, lease: &Lease, outcome: &Outcome, to_i32: impl Fn(u32) -> i32) {
        let failure = outcome.result.as_ref().err();
        let position = failure.and_then(|f| f.position);
        self.id.push(lease.job_id.0);
        self.worker_id.push(lease.worker_id.clone());
        self.attempt.push(to_i32(lease.attempt));
        self.status.push(outcome.status().as_str());
        self.result
            .push(outcome.result.as_ref().ok().map(|v| v.get().to_owned()));
        self.error
            .push(failure.map(|f| pg_text(&f.message).into_owned()));
        self.error_kind.push(failure.map(|f| f.kind.as_str()));
        self.error_line.push(position.map(|p| to_i32(p.line)));
        self.error_column.push(position.map(|p| to_i32(p.column)));
        self.stdout.push(pg_text(&outcome.stdout.text).into_owned());
        self.stdout_truncated.push(outcome.stdout.truncated);
        self.stderr.push(pg_text(&outcome.stderr.text).into_owned());
        self.stderr_truncated.push(outcome.stderr.truncated);
        self.exit_code.push(outcome.usage.exit_code);
        self.signal.push(outcome.usage.signal.clone());
        self.wall_ms.push(decode::signed(outcome.usage.wall_ms));
        self.cpu_ms.push(decode::signed(outcome.usage.cpu_ms));
        self.peak_memory_bytes
            .push(decode::signed(outcome.usage.peak_memory_bytes));
    }
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
    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
        let idempotency = job.idempotency.as_ref();
        if let Some(idempotency) = idempotency {
            // An expired key is forgotten, so the unique index lets it name a new job.
            let window =
                chrono::Duration::from_std(idempotency.window).unwrap_or(chrono::Duration::MAX);
            sqlx::query(
                "UPDATE jobs SET idempotency_key = NULL \
                 WHERE owner = $1 AND idempotency_key = $2 AND created_at < $3",
            )
            .bind(job.tenant.as_stored())
            .bind(&idempotency.key)
            .bind(job.created_at - window)
            .execute(&self.pool)
            .await?;
        }
        // ON CONFLICT DO NOTHING: of two requests racing with one key, exactly one inserts;
        // the other finds the winner's row below. The NOTIFY rides in the same statement, so
        // idle workers hear of the job as it commits, with no round trip of its own on the
        // request's path.
        let inserted: i64 = sqlx::query_scalar(
            "WITH inserted AS ( \
                 INSERT INTO jobs (id, status, script, timeout_ms, memory_mb, created_at, \
                     attempt, idempotency_key, request_hash, request_id, owner, args, \
                     webhook_url, webhook_state, webhook_next_at) \
                 VALUES ($1, 'queued', $2, $3, $4, $5, 0, $6, $7, $8, $10, $11, $12::text, \
                     CASE WHEN $12::text IS NULL THEN NULL ELSE 'pending' END, \
                     CASE WHEN $12::text IS NULL THEN NULL ELSE $5 END) \
                 ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL \
                 DO NOTHING \
                 RETURNING id) \
             SELECT count(*) FROM inserted, LATERAL pg_notify($9, '')",
        )
        .bind(job.id.0)
        .bind(&job.script)
        .bind(decode::millis(job.limits.timeout))
        .bind(i32::try_from(job.limits.memory_mb).unwrap_or(i32::MAX))
        .bind(job.created_at)
        .bind(idempotency.map(|i| i.key.as_str()))
        .bind(idempotency.map(|i| i.request_hash.as_str()))
        .bind(job.request_id.as_deref())
        .bind(QUEUED_CHANNEL)
        .bind(job.tenant.as_stored())
        .bind(job.args.as_deref())
        .bind(job.webhook_url.as_deref())
        .fetch_one(&self.pool)
        .await?;
        match idempotency {
            Some(idempotency) if inserted == 0 => {
                let (id, hash): (Uuid, Option<String>) = sqlx::query_as(
                    "SELECT id, request_hash FROM jobs WHERE owner = $1 AND idempotency_key = $2",
                )
                .bind(job.tenant.as_stored())
                .bind(&idempotency.key)
                .fetch_one(&self.pool)
                .await?;
                Ok(Enqueued::Existing {
                    id: JobId(id),
                    same_request: hash.as_deref() == Some(idempotency.request_hash.as_str()),
                })
            }
            _ => Ok(Enqueued::Created),
        }
    }

    async fn queued_of(&self, tenant: Tenant) -> Result<u64, StoreError> {
        let depth: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued' AND owner = $1")
                .bind(tenant.as_stored())
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(depth).unwrap_or(0))
    }

    async fn busiest_tenants(&self, limit: u32) -> Result<Vec<TenantLoad>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT owner, count(*) FILTER (WHERE status = 'queued'), \
                 count(*) FILTER (WHERE status = 'running') FROM jobs \
             WHERE status IN ('queued', 'running') GROUP BY owner",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(decode::busiest(rows, limit))
    }

    async fn cancel(&self, id: JobId) -> Result<Cancelled, StoreError> {
        // The NOTIFY wakes requests waiting on the job; its worker sees the lease gone at its
        // next heartbeat.
        let done: Option<Uuid> = sqlx::query_scalar(
            "WITH cancelled AS ( \
                 UPDATE jobs SET status = 'cancelled', finished_at = $1, \
                     lease_expires_at = NULL, error_kind = 'cancelled', error = $2 \
                 WHERE id = $3 AND status IN ('queued', 'running') \
                 RETURNING id) \
             SELECT id FROM cancelled, LATERAL pg_notify($4, id::text)",
        )
        .bind(Utc::now())
        .bind(CANCELLED_MESSAGE)
        .bind(id.0)
        .bind(FINISHED_CHANNEL)
        .fetch_optional(&self.pool)
        .await?;
        if done.is_some() {
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

    async fn delete_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError> {
        // Small batches keep each delete's locks and WAL short next to live traffic.
        let deleted = sqlx::query(
            "DELETE FROM jobs WHERE id IN ( \
                 SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1 \
                 AND status NOT IN ('queued', 'running') LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn append_output(&self, job: JobId, chunks: &[OutputChunk]) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = chunks.iter().map(|c| i64::from(c.seq)).collect();
        let streams: Vec<&str> = chunks.iter().map(|c| c.stream.as_str()).collect();
        let texts: Vec<String> = chunks
            .iter()
            .map(|c| pg_text(&c.text).into_owned())
            .collect();
        // One statement, its NOTIFY included, for the whole batch.
        sqlx::query(
            "WITH inserted AS ( \
                 INSERT INTO job_output (job_id, seq, stream, text) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[]) \
                 ON CONFLICT DO NOTHING RETURNING 1) \
             SELECT pg_notify($5, $1::text)",
        )
        .bind(job.0)
        .bind(&seqs)
        .bind(&streams)
        .bind(&texts)
        .bind(OUTPUT_CHANNEL)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn output_after(
        &self,
        job: JobId,
        after: u32,
        limit: u32,
    ) -> Result<Vec<OutputChunk>, StoreError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, stream, text FROM job_output WHERE job_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(job.0)
        .bind(i64::from(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode::output_chunk).collect()
    }

    async fn claim_webhooks(&self, lock_for: Duration, max: u32) -> Result<Vec<Job>, StoreError> {
        let now = Utc::now();
        let rows = sqlx::query(
            "UPDATE jobs SET webhook_locked_until = $1, webhook_attempts = webhook_attempts + 1 \
             WHERE id IN (SELECT id FROM jobs \
                 WHERE webhook_state = 'pending' AND webhook_next_at <= $2 \
                 AND status NOT IN ('queued', 'running') \
                 AND (webhook_locked_until IS NULL OR webhook_locked_until < $2) \
                 ORDER BY webhook_next_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(now + chrono::Duration::from_std(lock_for).unwrap_or(chrono::Duration::MAX))
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn webhook_delivered(&self, id: JobId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET webhook_state = 'delivered', webhook_delivered_at = $1, \
                 webhook_locked_until = NULL, webhook_last_error = NULL WHERE id = $2",
        )
        .bind(Utc::now())
        .bind(id.0)
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
            "UPDATE jobs SET \
                 webhook_state = CASE WHEN $1::timestamptz IS NULL THEN 'failed' ELSE 'pending' END, \
                 webhook_next_at = coalesce($1, webhook_next_at), webhook_locked_until = NULL, \
                 webhook_last_error = $2 WHERE id = $3",
        )
        .bind(retry_at)
        .bind(pg_text(error).as_ref())
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobSummary>, StoreError> {
        // Only the filters asked for, so each shape gets a plan that walks its index
        // (jobs_newest_first, jobs_by_status_newest_first, or jobs_by_owner_newest_first) from the
        // cursor: no OFFSET, no scan of earlier pages.
        let mut sql = QueryBuilder::<Postgres>::new(concat!(list_sql!(), "WHERE TRUE"));
        if let Some(tenant) = query.tenant {
            sql.push(" AND owner = ").push_bind(tenant.as_stored());
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(after) = query.after {
            sql.push(" AND (created_at, id) < (")
                .push_bind(after.created_at)
                .push(", ")
                .push_bind(after.id.0)
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
        // It walks the tenants with queued jobs (a skip scan of jobs_queued_by_owner: one
        // index seek per tenant), takes each one's oldest few, and ranks them by the tenant's
        // running jobs plus the job's place in its tenant's line: the least served tenant
        // first, tenants interleaved, none past its running quota (`cap`, 0 for none). Its
        // cost grows with tenants, not queued jobs (`tenants` is materialized so each tenant's
        // running jobs are counted once, not once per candidate). FOR UPDATE SKIP LOCKED then locks the
        // picked rows, and concurrent claimers skip locked rows instead of waiting on them, so
        // each queued job goes to exactly one claimer; each tenant offers more candidates
        // than one claim takes, so claimers racing for one tenant's line still find work.
        let rows = sqlx::query(
            "WITH RECURSIVE owners(owner) AS ( \
                 SELECT min(owner) FROM jobs WHERE status = 'queued' \
                 UNION ALL \
                 SELECT (SELECT min(owner) FROM jobs \
                         WHERE status = 'queued' AND owner > owners.owner) \
                 FROM owners WHERE owners.owner IS NOT NULL), \
             tenants AS MATERIALIZED ( \
                 SELECT owner, \
                     (SELECT count(*) FROM jobs \
                      WHERE status = 'running' AND jobs.owner = owners.owner) AS running, \
                     CASE WHEN owner = '' THEN 0 ELSE coalesce( \
                         (SELECT max_running FROM api_keys WHERE id::text = owners.owner), $5) \
                     END AS cap \
                 FROM owners WHERE owner IS NOT NULL), \
             candidates AS ( \
                 SELECT q.id, q.created_at, t.running, t.cap, \
                     row_number() OVER (PARTITION BY t.owner ORDER BY q.created_at, q.id) AS place \
                 FROM tenants t CROSS JOIN LATERAL ( \
                     SELECT id, created_at FROM jobs WHERE status = 'queued' AND owner = t.owner \
                     ORDER BY created_at, id LIMIT $6) q), \
             picked AS ( \
                 SELECT j.id FROM candidates c JOIN jobs j ON j.id = c.id \
                 WHERE j.status = 'queued' AND (c.cap <= 0 OR c.running + c.place <= c.cap) \
                 ORDER BY c.running + c.place, c.created_at, c.id \
                 LIMIT $4 FOR UPDATE OF j SKIP LOCKED) \
             UPDATE jobs SET status = 'running', worker_id = $1, attempt = attempt + 1, \
                 started_at = $2, lease_expires_at = $3 \
             FROM picked WHERE jobs.id = picked.id \
             RETURNING jobs.id, script, timeout_ms, memory_mb, attempt, created_at, request_id, args",
        )
        .bind(worker_id)
        .bind(Utc::now())
        .bind(lease_deadline(lease_for))
        .bind(i64::from(max))
        .bind(i32::try_from(self.tenant_max_running).unwrap_or(i32::MAX))
        .bind(i64::from(max) + CLAIM_SPARE_CANDIDATES)
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
                        created_at,
                        script: row.try_get("script")?,
                        limits: limits_from_row(row)?,
                        request_id: row.try_get("request_id")?,
                        args: row.try_get("args")?,
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

    async fn finish_many(&self, finished: &[(Lease, Outcome)]) -> Result<Vec<JobId>, StoreError> {
        if finished.is_empty() {
            return Ok(Vec::new());
        }
        let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let mut columns = FinishColumns::default();
        for (lease, outcome) in finished {
            columns.push(lease, outcome, to_i32);
        }
        // One statement for the whole batch: the rows arrive as parallel arrays, and each
        // update is fenced on (id, worker, attempt, running) like a single write-back. The
        // NOTIFYs ride in the same statement, so they are sent exactly when the writes commit.
        let written: Vec<Uuid> = sqlx::query_scalar(
            "WITH input AS ( \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::text[], \
                     $5::text[], $6::text[], $7::text[], $8::int[], $9::int[], $10::text[], \
                     $11::bool[], $12::text[], $13::bool[], $14::int[], $15::text[], \
                     $16::bigint[], $17::bigint[], $18::bigint[]) \
                 AS t(id, worker_id, attempt, status, result, error, error_kind, error_line, \
                      error_column, stdout, stdout_truncated, stderr, stderr_truncated, \
                      exit_code, signal, wall_ms, cpu_ms, peak_memory_bytes)), \
             done AS ( \
                 UPDATE jobs j SET status = i.status, finished_at = $19, \
                     lease_expires_at = NULL, completions = j.completions + 1, \
                     result = i.result, error = i.error, \
                     error_kind = i.error_kind, error_line = i.error_line, \
                     error_column = i.error_column, stdout = i.stdout, \
                     stdout_truncated = i.stdout_truncated, stderr = i.stderr, \
                     stderr_truncated = i.stderr_truncated, exit_code = i.exit_code, \
                     signal = i.signal, wall_ms = i.wall_ms, cpu_ms = i.cpu_ms, \
                     peak_memory_bytes = i.peak_memory_bytes \
                 FROM input i \
                 WHERE j.id = i.id AND j.worker_id = i.worker_id AND j.attempt = i.attempt \
                   AND j.status = 'running' \
                 RETURNING j.id) \
             SELECT id FROM done, LATERAL pg_notify($20, id::text)",
        )
        .bind(columns.id)
        .bind(columns.worker_id)
        .bind(columns.attempt)
        .bind(columns.status)
        .bind(columns.result)
        .bind(columns.error)
        .bind(columns.error_kind)
        .bind(columns.error_line)
        .bind(columns.error_column)
        .bind(columns.stdout)
        .bind(columns.stdout_truncated)
        .bind(columns.stderr)
        .bind(columns.stderr_truncated)
        .bind(columns.exit_code)
        .bind(columns.signal)
        .bind(columns.wall_ms)
        .bind(columns.cpu_ms)
        .bind(columns.peak_memory_bytes)
        .bind(Utc::now())
        .bind(FINISHED_CHANNEL)
        .fetch_all(&self.pool)
        .await?;
        Ok(written.into_iter().map(JobId).collect())
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

    async fn reap_expired(&self, max_attempts: u32) -> Result<Reaped, StoreError> {
        let now = Utc::now();
        // Row locks make concurrent reapers safe: a row one of them updated no longer
        // matches `status = 'running'` for the other. Failed jobs notify their waiters.
        let failed: Vec<Uuid> = sqlx::query_scalar(
            "WITH lost AS ( \
                 UPDATE jobs SET status = 'failed', finished_at = $1, lease_expires_at = NULL, \
                     error_kind = 'worker_lost', error = $2 \
                 WHERE status = 'running' AND lease_expires_at < $1 AND attempt >= $3 \
                 RETURNING id) \
             SELECT id FROM lost, LATERAL pg_notify($4, id::text)",
        )
        .bind(now)
        .bind(WORKER_LOST_MESSAGE)
        .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
        .bind(FINISHED_CHANNEL)
        .fetch_all(&self.pool)
        .await?;
        let requeued = sqlx::query(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, started_at = NULL, \
                 lease_expires_at = NULL \
             WHERE status = 'running' AND lease_expires_at < $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if requeued > 0 {
            self.enqueued.notify_one();
        }
        Ok(Reaped {
            requeued,
            failed: u64::try_from(failed.len()).unwrap_or(u64::MAX),
        })
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

fn key_from_row(row: &PgRow) -> Result<ApiKey, StoreError> {
    let count = |column: &str| -> Result<Option<u32>, StoreError> {
        let value: Option<i32> = row.try_get(column)?;
        Ok(value.map(|v| u32::try_from(v).unwrap_or(0)))
    };
    let max_timeout_ms: Option<i64> = row.try_get("max_timeout_ms")?;
    Ok(ApiKey {
        id: KeyId(row.try_get("id")?),
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        admin: row.try_get("admin")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
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
impl KeyStore for PgStore {
    async fn create_key(&self, new: &HashedKey) -> Result<(), StoreError> {
        let key = &new.key;
        let quotas = &key.quotas;
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, admin, created_at, max_running, \
                 max_queued, submissions_per_minute, max_timeout_ms, max_memory_mb) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(key.id.0)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&new.hash)
        .bind(key.admin)
        .bind(key.created_at)
        .bind(quotas.max_running.map(to_i32))
        .bind(quotas.max_queued.map(to_i32))
        .bind(quotas.submissions_per_minute.map(to_i32))
        .bind(quotas.max_timeout.map(decode::millis))
        .bind(quotas.max_memory_mb.map(to_i32))
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
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(Utc::now())
                .bind(id.0)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 1 {
            return Ok(Revoked::Done);
        }
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM api_keys WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(if exists.is_some() {
            Revoked::Already
        } else {
            Revoked::NotFound
        })
    }

    async fn active_key_by_hash(&self, hash: &str) -> Result<Option<HashedKey>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL")
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
        let any: Option<i32> =
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
            let row: Option<(Option<f64>, Option<DateTime<Utc>>)> =
                sqlx::query_as("SELECT bucket_tokens, bucket_at FROM api_keys WHERE id = $1")
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await?;
            let Some((tokens, at)) = row else {
                return Ok(None);
            };
            let elapsed = at.map_or(Duration::ZERO, |at| (now - at).to_std().unwrap_or_default());
            let available = super::refill(tokens, elapsed, per_minute);
            if available < 1.0 {
                return Ok(Some(super::until_next_token(available, per_minute)));
            }
            let taken = sqlx::query(
                "UPDATE api_keys SET bucket_tokens = $1, bucket_at = $2 \
                 WHERE id = $3 AND bucket_tokens IS NOT DISTINCT FROM $4 \
                     AND bucket_at IS NOT DISTINCT FROM $5",
            )
            .bind(available - 1.0)
            .bind(now)
            .bind(id.0)
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

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
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
