//! Runs `pycheck` off the async runtime, on threads with the stack it needs, at most a few at a
//! time, so hostile scripts cannot stall or crash the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pycheck::{Limits, MainSignature};
use tokio::sync::{oneshot, Semaphore};

use crate::error::ApiError;

/// Stack of each validation thread. Eight times what pycheck needs: it is only reserved address
/// space, and pycheck's parser is third-party code fed untrusted input.
const STACK_BYTES: usize = 64 * 1024 * 1024;
const _: () = assert!(STACK_BYTES >= pycheck::MIN_STACK_BYTES);

/// How long a request waits for a validation slot before getting a 503.
const QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Bounded, off-runtime access to [`pycheck::check`].
pub struct ScriptChecker {
    slots: Semaphore,
    limits: Arc<Limits>,
}

impl ScriptChecker {
    #[must_use]
    pub fn new(concurrency: usize) -> Self {
        Self {
            slots: Semaphore::new(concurrency.max(1)),
            limits: Arc::new(Limits::default()),
        }
    }

    /// Checks `script`, its `main` called with keyword arguments of these `names`, on a
    /// dedicated thread.
    ///
    /// # Errors
    /// The script's 400, or 503 when validation capacity stays busy.
    pub async fn check(
        &self,
        script: String,
        names: Vec<String>,
    ) -> Result<MainSignature, ApiError> {
        let _slot = tokio::time::timeout(QUEUE_WAIT, self.slots.acquire())
            .await
            .map_err(|_| ApiError::Busy)?
            .map_err(|_| ApiError::Busy)?;
        let (tx, rx) = oneshot::channel();
        let limits = Arc::clone(&self.limits);
        std::thread::Builder::new()
            .name("validate".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let started = Instant::now();
                let verdict = pycheck::check_call(&script, &limits, &names);
                crate::metrics::script_validated(started.elapsed(), verdict.as_ref().err());
                let _ = tx.send(verdict);
            })
            .map_err(|e| ApiError::Internal(format!("cannot start validation thread: {e}")))?;
        let verdict = rx
            .await
            .map_err(|_| ApiError::Internal("validation thread panicked".to_owned()))?;
        Ok(verdict?)
    }
}
