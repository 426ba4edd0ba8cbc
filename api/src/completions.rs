//! Waiting for jobs to finish: requests register the job they wait on, and one background
//! task asks the store about all of them in a single query (per store change, or per tick
//! without wake-ups) and wakes the owners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::job::JobId;
use shared::store::JobStore;
use tokio::sync::{broadcast, oneshot, watch, Notify};

/// Registry of in-flight waits, shared by all requests of one API process.
#[derive(Default)]
pub struct Completions {
    waiting: Mutex<HashMap<JobId, Vec<oneshot::Sender<()>>>>,
    registered: Notify,
    stopped: AtomicBool,
}

impl Completions {
    /// Waits until `id` reaches a terminal status or `limit` passes; true if it finished.
    /// False at once after [`Completions::stop`].
    pub async fn wait(&self, id: JobId, limit: Duration) -> bool {
        if self.stopped.load(Ordering::SeqCst) {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        self.lock().entry(id).or_default().push(tx);
        self.registered.notify_one();
        matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(())))
    }

    /// Ends every wait now (they report "not finished") and refuses new ones: on shutdown,
    /// waiting `/execute` requests answer 202 with their job's location instead of being cut.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.lock().clear();
    }

    /// Whether [`Completions::stop`] was called: the server is shutting down.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Vec<oneshot::Sender<()>>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ids still awaited by someone; waits abandoned by their request are dropped here.
    fn awaited(&self) -> Vec<JobId> {
        let mut waiting = self.lock();
        waiting.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        waiting.keys().copied().collect()
    }

    fn wake(&self, id: JobId) {
        if let Some(senders) = self.lock().remove(&id) {
            for sender in senders {
                let _ = sender.send(());
            }
        }
    }

    /// Wakes waiters for the life of the process. With the store's wake-ups it listens for
    /// "job finished" (Postgres: by id) and "store changed, re-check" (SQLite: any commit by
    /// any process) and polls only every `backstop`, in case one is lost; without them it
    /// polls every `poll`. Idle (no waiters) it sleeps until a request registers.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn JobStore>,
        poll: Duration,
        backstop: Duration,
    ) {
        let events = store.events();
        let every = if events.is_some() { backstop } else { poll };
        let mut finished = events.as_ref().map(|events| events.finished.subscribe());
        let mut changed = events.as_ref().map(|events| events.changed.subscribe());
        loop {
            let ids = self.awaited();
            if ids.is_empty() {
                self.registered.notified().await;
                continue;
            }
            // The query below sees every change made so far; only later ones call for another.
            if let Some(changed) = changed.as_mut() {
                changed.mark_unchanged();
            }
            match store.terminal_among(&ids).await {
                Ok(done) => {
                    for id in done {
                        self.wake(id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking for finished jobs failed"),
            }
            let tick = tokio::time::sleep(every);
            tokio::pin!(tick);
            // Between polls, wake waiters as notifications arrive; a change of the store, or a
            // new waiter (its job may have finished before it registered), ends the pause.
            loop {
                tokio::select! {
                    () = &mut tick => break,
                    () = self.registered.notified() => break,
                    change = next_change(changed.as_mut()) => {
                        if change.is_err() {
                            changed = None;
                        }
                        break;
                    }
                    message = next_finished(finished.as_mut()) => match message {
                        Ok(id) => self.wake(id),
                        // Missed some: poll now.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            finished = None;
                            break;
                        }
                    },
                }
            }
        }
    }
}

/// The next "store changed" mark; never, without a subscription.
async fn next_change(
    changed: Option<&mut watch::Receiver<()>>,
) -> Result<(), watch::error::RecvError> {
    match changed {
        Some(changed) => changed.changed().await,
        None => std::future::pending().await,
    }
}

/// The next "job finished" notification; never, without a subscription.
async fn next_finished(
    finished: Option<&mut broadcast::Receiver<JobId>>,
) -> Result<JobId, broadcast::error::RecvError> {
    match finished {
        Some(finished) => finished.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use serde_json::value::RawValue;
    use shared::job::{Limits, NewJob, Outcome, Output, Usage};
    use shared::store::{Schema, SqliteStore, StoreOptions};
    use shared::tenant::Tenant;

    use super::*;

    const LEASE: Duration = Duration::from_secs(15);
    /// Far longer than the test may take: only a wake-up can end a wait.
    const NO_POLL: Duration = Duration::from_secs(3600);

    async fn enqueue_and_claim(store: &dyn JobStore) -> shared::job::Lease {
        let job = NewJob {
            id: JobId::new(),
            script: "def main():\n    return 1\n".to_owned(),
            limits: Limits {
                timeout: Duration::from_secs(1),
                memory_mb: 64,
            },
            created_at: Utc::now(),
            idempotency: None,
            request_id: None,
            tenant: Tenant::NONE,
            args: None,
            webhook_url: None,
        };
        store.enqueue(&job).await.expect("enqueue");
        let mut claimed = store.claim("worker", 1, LEASE).await.expect("claim");
        claimed.pop().expect("the job just queued").lease
    }

    fn success() -> Outcome {
        Outcome {
            result: Ok(RawValue::from_string("1".to_owned()).expect("valid JSON")),
            stdout: Output::default(),
            stderr: Output::default(),
            usage: Usage::default(),
        }
    }

    #[tokio::test]
    async fn waiters_on_sqlite_wake_when_another_process_finishes_their_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        // The worker's store and the API's, each with its own connections, as two processes.
        let worker: Arc<dyn JobStore> = Arc::new(
            SqliteStore::connect(&url, Schema::Migrate, &StoreOptions::default())
                .await
                .expect("open the worker's store"),
        );
        let options = StoreOptions {
            listen_finished: true,
            ..StoreOptions::default()
        };
        let api: Arc<dyn JobStore> = Arc::new(
            SqliteStore::connect(&url, Schema::RequireCurrent, &options)
                .await
                .expect("open the API's store"),
        );
        let running = enqueue_and_claim(worker.as_ref()).await;
        let finished_first = enqueue_and_claim(worker.as_ref()).await;
        worker
            .finish(&finished_first, &success())
            .await
            .expect("finish");
        let completions = Arc::new(Completions::default());
        let running_wait = completions.wait(running.job_id, Duration::from_secs(5));
        let finished_wait = completions.wait(finished_first.job_id, Duration::from_secs(5));
        tokio::pin!(running_wait, finished_wait);
        // The first poll registers each wait.
        assert!(futures::poll!(&mut running_wait).is_pending());
        assert!(futures::poll!(&mut finished_wait).is_pending());
        // The registrations left the waiter task a permit to check, which it does at start
        // anyway; taken here, so that it checks once, not twice: a second check could see the
        // finish below.
        let _ = tokio::time::timeout(Duration::ZERO, completions.registered.notified()).await;
        tokio::spawn(Arc::clone(&completions).run(api, NO_POLL, NO_POLL));
        // The job that finished first is woken by the task's first check, which covered the
        // running job too: from here only a wake-up can end the other wait.
        assert!(finished_wait.await);
        worker.finish(&running, &success()).await.expect("finish");
        assert!(
            running_wait.await,
            "the waiter learns of the finish without a poll"
        );
    }
}
