//! Waiting for jobs to finish: requests register the job they wait on, and one background
//! task asks the store about all of them in a single query per tick and wakes the owners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::job::JobId;
use shared::store::JobStore;
use tokio::sync::{broadcast, oneshot, Notify};

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

    /// Wakes waiters for the life of the process: from the store's "finished" notifications
    /// when it has them (polling every `backstop` in case one is lost), else by polling every
    /// `poll`. Idle (no waiters) it sleeps until a request registers.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn JobStore>,
        poll: Duration,
        backstop: Duration,
    ) {
        let mut finished = store.events().map(|events| events.finished.subscribe());
        let every = if finished.is_some() { backstop } else { poll };
        loop {
            let ids = self.awaited();
            if ids.is_empty() {
                self.registered.notified().await;
                continue;
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
            // Between polls, wake waiters as notifications arrive; a new waiter also ends the
            // pause, since its job may have finished before it registered.
            loop {
                let Some(receiver) = finished.as_mut() else {
                    tokio::select! {
                        () = &mut tick => break,
                        () = self.registered.notified() => break,
                    }
                };
                tokio::select! {
                    () = &mut tick => break,
                    () = self.registered.notified() => break,
                    message = receiver.recv() => match message {
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
