//! The claim loop: take up to as many jobs as there are free slots, run each on an executor,
//! keep its lease alive, write the outcome back, and on shutdown hand unfinished jobs back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::job::{ClaimedJob, JobId, Lease, Outcome};
use shared::store::{JobStore, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::live_output::Shipper;
use crate::sandbox::Executor;

/// How the loop behaves; built from the worker's config.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub worker_id: String,
    pub concurrency: usize,
    /// Idle poll interval when the store pushes no notifications.
    pub poll_interval: Duration,
    /// Idle poll interval when it does, in case one is lost.
    pub backstop_poll: Duration,
    pub lease: Duration,
    /// How often a running job's lease is renewed; a cancelled job is noticed (and its
    /// sandbox killed) within one interval.
    pub heartbeat: Duration,
    pub shutdown_grace: Duration,
    /// Runs a job gets before a lost worker fails it with `worker_lost`.
    pub max_attempts: u32,
    /// How long past a job's timeout its executor may take before the worker stops waiting,
    /// kills the sandbox and fails the job with `sandbox_error`.
    pub sandbox_stop_grace: Duration,
}

/// The usual [`RunnerSettings::sandbox_stop_grace`]: a sandbox normally reports within a few
/// seconds of the job's timeout (kill, drain its output, empty its cgroup).
pub const SANDBOX_STOP_GRACE: Duration = Duration::from_secs(30);

/// Longest wait between retries when the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Leases of the jobs this worker is running, so shutdown can release them.
type Running = Arc<Mutex<HashMap<JobId, Lease>>>;

/// Runs until `shutdown` is cancelled, then drains for the grace period and releases what is
/// still running.
pub async fn run(
    store: Arc<dyn JobStore>,
    executor: Arc<dyn Executor>,
    settings: RunnerSettings,
    shutdown: CancellationToken,
) {
    let (free_tx, mut free_rx) = mpsc::unbounded_channel::<usize>();
    for slot in 0..settings.concurrency {
        let _ = free_tx.send(slot);
    }
    let running: Running = Arc::default();
    let mut tasks = JoinSet::new();
    let (finished_tx, finished_rx) = mpsc::channel(settings.concurrency.max(1));
    let writer = tokio::spawn(write_back(Arc::clone(&store), finished_rx));
    let reaper = tokio::spawn(reap(
        Arc::clone(&store),
        settings.lease / 3,
        settings.max_attempts,
        shutdown.clone(),
    ));
    let context = JobContext {
        store: Arc::clone(&store),
        executor: Arc::clone(&executor),
        lease_for: settings.lease,
        heartbeat: settings.heartbeat.min(settings.lease / 3),
        stop_grace: settings.sandbox_stop_grace,
        running: Arc::clone(&running),
        free: free_tx.clone(),
        finished: finished_tx,
    };
    let queued = store.events().map(|events| events.queued);
    let idle_poll = if queued.is_some() {
        settings.backstop_poll
    } else {
        settings.poll_interval
    };
    let mut backoff = idle_poll;

    tracing::info!(
        worker_id = %settings.worker_id,
        concurrency = settings.concurrency,
        "worker started"
    );
    loop {
        // Wait for at least one free slot, then gather every other free one.
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = free_rx.recv() => slot,
        };
        let Some(first) = first else { break };
        let mut slots = vec![first];
        while let Ok(slot) = free_rx.try_recv() {
            slots.push(slot);
        }
        while tasks.try_join_next().is_some() {}

        let max = u32::try_from(slots.len()).unwrap_or(u32::MAX);
        let claimed = match store.claim(&settings.worker_id, max, settings.lease).await {
            Ok(claimed) => {
                backoff = idle_poll;
                claimed
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "claim failed");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                Vec::new()
            }
        };
        let idle = claimed.is_empty();
        // The slots came back in the order their jobs ended: taking the longest-free first,
        // a job runs on another CPU than the one just ended, whose teardown (and the fork of
        // its slot's next sandbox) then runs beside it rather than ahead of it.
        let mut slots = slots.into_iter();
        for job in claimed {
            crate::metrics::job_claimed(&job);
            let Some(slot) = slots.next() else { break };
            running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(job.lease.job_id, job.lease.clone());
            let span = tracing::info_span!(
                "job",
                job_id = %job.lease.job_id,
                attempt = job.lease.attempt,
                request_id = job.request_id.as_deref().unwrap_or("-"),
            );
            tasks.spawn(run_job(job, slot, context.clone()).instrument(span));
        }
        for slot in slots {
            let _ = free_tx.send(slot);
        }
        if idle {
            let notified = async {
                match &queued {
                    Some(queued) => queued.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(jittered(backoff)) => {}
                () = notified => {}
            }
        }
    }

    drain(Arc::clone(&store), tasks, running, settings.shutdown_grace).await;
    // The last job tasks are gone; dropping the last sender lets the writer finish its queue.
    drop(context);
    let _ = writer.await;
    let _ = reaper.await;
}

/// Every worker also reaps: jobs whose lease expired go back to the queue (or fail with
/// `worker_lost` after their last attempt). Concurrent reapers are safe; see the stores.
async fn reap(
    store: Arc<dyn JobStore>,
    every: Duration,
    max_attempts: u32,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(jittered(every)) => {}
        }
        match store
            .reap_expired(max_attempts)
            .await
            .inspect(crate::metrics::jobs_reaped)
        {
            Ok(reaped) if reaped.requeued + reaped.failed > 0 => tracing::warn!(
                requeued = reaped.requeued,
                failed = reaped.failed,
                "reaped jobs whose worker stopped renewing its lease"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaping expired leases failed"),
        }
    }
}

/// Lets running jobs finish for `grace`, then stops them and puts them back in the queue.
async fn drain(
    store: Arc<dyn JobStore>,
    mut tasks: JoinSet<()>,
    running: Running,
    grace: Duration,
) {
    if !tasks.is_empty() {
        tracing::info!(
            running = tasks.len(),
            ?grace,
            "shutting down: waiting for running jobs"
        );
    }
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_ok() {
        return;
    }
    // Aborting a job task drops its sandbox, which kills nsjail and the jail with it.
    tasks.shutdown().await;
    let leases: Vec<Lease> = running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .drain()
        .map(|(_, lease)| lease)
        .collect();
    for lease in leases {
        match store.release(&lease).await {
            Ok(()) => {
                tracing::info!(job_id = %lease.job_id, "released unfinished job to the queue")
            }
            Err(e) => {
                tracing::warn!(job_id = %lease.job_id, error = %e, "could not release job; its lease will expire")
            }
        }
    }
}

/// What a job task needs besides its job.
#[derive(Clone)]
struct JobContext {
    store: Arc<dyn JobStore>,
    executor: Arc<dyn Executor>,
    lease_for: Duration,
    heartbeat: Duration,
    stop_grace: Duration,
    running: Running,
    free: mpsc::UnboundedSender<usize>,
    finished: mpsc::Sender<Finished>,
}

/// Hands a job's slot back when the job task ends, however it ends: a task that panicked must
/// not shrink the worker's capacity for good. (Its lease stays in `running`, so shutdown
/// releases the job; until then the reaper requeues it once the lease expires.)
struct SlotGuard {
    slot: usize,
    free: mpsc::UnboundedSender<usize>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let _ = self.free.send(self.slot);
    }
}

async fn run_job(job: ClaimedJob, slot: usize, context: JobContext) {
    let JobContext {
        store,
        executor,
        lease_for,
        heartbeat,
        stop_grace,
        running,
        free,
        finished,
    } = context;
    let _slot = SlotGuard { slot, free };
    let queued_ms = (chrono::Utc::now() - job.created_at)
        .num_milliseconds()
        .max(0);
    tracing::info!(queued_ms, "job started");
    let run = crate::metrics::JobRun::start();
    // A sandbox that never reports (a process stuck in the kernel, say) must not hold its slot
    // and its job forever; dropping the execution kills what is left of the sandbox.
    let deadline = job.limits.timeout + stop_grace;
    let shipper = Shipper::start(Arc::clone(&store), &job.lease);
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(deadline, executor.execute(&job, slot, shipper.tap())) => {
            Some(outcome.unwrap_or_else(|_| {
                tracing::error!(?deadline, "the sandbox did not report in time; killed");
                Outcome::sandbox_error(format!(
                    "the sandbox did not stop within {} s of the job's timeout",
                    stop_grace.as_secs()
                ))
            }))
        }
        lost = keep_lease(store.as_ref(), &job.lease, lease_for, heartbeat) => {
            tracing::warn!(error = %lost, "job cancelled or lease lost while running; sandbox stopped");
            None
        }
    };
    run.ended(outcome.is_some());
    // The last output is stored before the outcome, so a follower sees all of it before the
    // job's end.
    shipper.finish().await;
    if let Some(outcome) = outcome {
        let (written, done) = oneshot::channel();
        let handed_over = finished
            .send(Finished {
                lease: job.lease.clone(),
                outcome,
                span: tracing::Span::current(),
                written,
            })
            .await;
        if handed_over.is_ok() {
            let _ = done.await;
        }
    }
    running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&job.lease.job_id);
}

/// Extends the lease every `every`; returns only when the lease is lost (the job was
/// cancelled, or reaped after this worker lost the database for too long).
async fn keep_lease(
    store: &dyn JobStore,
    lease: &Lease,
    lease_for: Duration,
    every: Duration,
) -> StoreError {
    let mut interval = tokio::time::interval(every);
    interval.tick().await;
    loop {
        interval.tick().await;
        match store.heartbeat(lease, lease_for).await {
            Ok(()) => {}
            Err(e @ StoreError::LeaseLost(_)) => return e,
            // A database hiccup is not a lost lease; the next beat may get through.
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Largest number of outcomes written in one transaction.
const MAX_WRITE_BATCH: usize = 1024;

/// What the writer hands back per job: the span to log the write-back in, and the signal.
type Reply = (tracing::Span, oneshot::Sender<()>);

/// A finished job on its way to the store; `written` fires once it is handled.
struct Finished {
    lease: Lease,
    outcome: Outcome,
    /// The job's span, so the write-back is logged with its job and request ids.
    span: tracing::Span,
    written: oneshot::Sender<()>,
}

/// Writes outcomes back in batches: whatever finished while the previous write was in flight
/// goes into the next transaction, so many short jobs cost one commit, not one each. A batch
/// that cannot be written is retried while the database is unreachable, never dropped.
async fn write_back(store: Arc<dyn JobStore>, mut finished: mpsc::Receiver<Finished>) {
    while let Some(first) = finished.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_WRITE_BATCH {
            match finished.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (items, replies): (Vec<(Lease, Outcome)>, Vec<Reply>) = batch
            .into_iter()
            .map(|f| ((f.lease, f.outcome), (f.span, f.written)))
            .unzip();
        let spans: Vec<&tracing::Span> = replies.iter().map(|(span, _)| span).collect();
        write_batch(store.as_ref(), &items, &spans).await;
        for (_, reply) in replies {
            let _ = reply.send(());
        }
    }
}

async fn write_batch(store: &dyn JobStore, items: &[(Lease, Outcome)], spans: &[&tracing::Span]) {
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=30 {
        match store.finish_many(items).await {
            Ok(written) => {
                for ((lease, outcome), span) in items.iter().zip(spans) {
                    let _entered = span.enter();
                    crate::metrics::job_finished(outcome, written.contains(&lease.job_id));
                    if written.contains(&lease.job_id) {
                        tracing::info!(
                            status = outcome.status().as_str(),
                            error_kind = outcome.result.as_ref().err().map(|f| f.kind.as_str()),
                            duration_ms = outcome.usage.wall_ms,
                            "job finished"
                        );
                    } else {
                        tracing::warn!("result discarded: the job was taken over or cancelled");
                    }
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, jobs = items.len(), "could not write results; retrying");
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::error!(
        jobs = items.len(),
        "giving up writing results; their leases will expire and the jobs will be retried"
    );
}

/// `base` plus up to 25% random jitter, so many workers do not retry in lockstep.
fn jittered(base: Duration) -> Duration {
    let nanos = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    let quarter = u64::try_from(base.as_nanos() / 4).unwrap_or(0).max(1);
    base + Duration::from_nanos(nanos % quarter)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use async_trait::async_trait;
    use shared::job::{ErrorKind, Job, JobStatus, Limits, NewJob, Outcome};
    use shared::store::{self, Schema, StoreOptions};
    use shared::tenant::Tenant;

    use super::*;
    use crate::noop::NoopExecutor;

    /// Misbehaves on scripts that ask for it, completes the others without running them.
    struct Misbehaves;

    #[async_trait]
    impl Executor for Misbehaves {
        async fn execute(
            &self,
            job: &ClaimedJob,
            slot: usize,
            _tap: &crate::sandbox::OutputTap,
        ) -> Outcome {
            match job.script.as_str() {
                "panic" => panic!("executor bug"),
                "hang" => std::future::pending().await,
                _ => NoopExecutor.execute(job, slot, &None).await,
            }
        }
    }

    /// A worker with one slot (so a slot lost to one job would stop all others) on a fresh
    /// SQLite store, running `scripts` in order.
    struct OneSlotWorker {
        store: Arc<dyn JobStore>,
        jobs: Vec<JobId>,
        shutdown: CancellationToken,
        runner: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl OneSlotWorker {
        async fn start(scripts: &[&str]) -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
            let store = store::connect(&url, Schema::Migrate, &StoreOptions::default())
                .await
                .expect("store");
            let mut jobs = Vec::new();
            for script in scripts {
                let job = NewJob {
                    id: JobId::new(),
                    script: (*script).to_owned(),
                    limits: Limits {
                        timeout: Duration::from_millis(100),
                        memory_mb: 64,
                    },
                    created_at: chrono::Utc::now(),
                    idempotency: None,
                    request_id: None,
                    tenant: Tenant::NONE,
                    args: None,
                    webhook_url: None,
                };
                store.enqueue(&job).await.expect("enqueue");
                jobs.push(job.id);
            }
            let shutdown = CancellationToken::new();
            let runner = tokio::spawn(run(
                Arc::clone(&store),
                Arc::new(Misbehaves),
                RunnerSettings {
                    worker_id: "test".to_owned(),
                    concurrency: 1,
                    poll_interval: Duration::from_millis(20),
                    backstop_poll: Duration::from_millis(20),
                    lease: Duration::from_secs(60),
                    heartbeat: Duration::from_secs(1),
                    shutdown_grace: Duration::from_millis(100),
                    max_attempts: 1,
                    sandbox_stop_grace: Duration::from_millis(200),
                },
                shutdown.clone(),
            ));
            Self {
                store,
                jobs,
                shutdown,
                runner,
                _dir: dir,
            }
        }

        /// Job `index` once it is finished, or as it is after 10 s.
        async fn finished(&self, index: usize) -> Job {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let job = self.store.get(self.jobs[index]).await.expect("get");
                let job = job.expect("job exists");
                if !matches!(job.status, JobStatus::Queued | JobStatus::Running)
                    || Instant::now() > deadline
                {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.runner.await.expect("runner stops");
        }
    }

    #[tokio::test]
    async fn a_job_task_that_panics_gives_its_slot_back() {
        let worker = OneSlotWorker::start(&["panic", "fine"]).await;
        assert_eq!(worker.finished(1).await.status, JobStatus::Succeeded);
        worker.stop().await;
    }

    #[tokio::test]
    async fn a_sandbox_that_never_reports_fails_its_job_and_frees_the_slot() {
        let worker = OneSlotWorker::start(&["hang", "fine"]).await;
        let hung = worker.finished(0).await;
        assert_eq!(hung.status, JobStatus::Failed);
        let failure = hung.failure.expect("a failure");
        assert_eq!(failure.kind, ErrorKind::SandboxError);
        assert_eq!(worker.finished(1).await.status, JobStatus::Succeeded);
        worker.stop().await;
    }
}
