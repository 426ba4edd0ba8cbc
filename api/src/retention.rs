//! Deleting finished jobs once they are older than the retention period, in small batches so
//! the deletes never hold long locks next to live traffic.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shared::store::JobStore;

const BATCH: u32 = 500;
const EVERY: Duration = Duration::from_secs(60);

/// Runs for the life of the process. Several API processes may run it at once: a row deleted
/// by one is simply not found by the others.
pub async fn run(store: Arc<dyn JobStore>, retention: Duration) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        let cutoff = Utc::now() - retention;
        let mut deleted = 0u64;
        loop {
            match store.delete_finished_before(cutoff, BATCH).await {
                Ok(n) => {
                    deleted += n;
                    if n < u64::from(BATCH) {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deleting old jobs failed");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "deleted finished jobs past retention");
        }
        tokio::time::sleep(EVERY).await;
    }
}
