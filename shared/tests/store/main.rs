//! The `JobStore` contract. Every case is written once, generic over the store, and
//! instantiated for each backend by `store_cases!`, so no behaviour exists for one backend only.

mod cases;

use std::sync::Arc;

use shared::store::{JobStore, Schema, SqliteStore};

/// A store on a fresh database, and whatever keeps that database alive.
pub struct Fixture {
    pub store: Arc<dyn JobStore>,
    /// URL of the database behind `store` (migrated).
    pub url: String,
    /// URL of a second database that has never been migrated.
    pub empty_url: String,
    _dir: tempfile::TempDir,
}

pub async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteStore::connect(&url, Schema::Migrate)
        .await
        .expect("open sqlite store");
    Fixture {
        store: Arc::new(store),
        url,
        empty_url: format!("sqlite://{}", dir.path().join("empty.db").display()),
        _dir: dir,
    }
}

/// Instantiates every case in `cases` for one backend.
macro_rules! store_cases {
    ($backend:ident) => {
        mod $backend {
            store_cases!(@case $backend,
                enqueued_job_is_queued_and_readable,
                unknown_job_is_none,
                claim_hands_out_oldest_first,
                claim_takes_at_most_the_requested_number,
                claim_records_worker_attempt_and_lease,
                concurrent_claimers_never_receive_the_same_job,
                finish_records_the_outcome,
                finish_by_the_wrong_worker_or_attempt_is_rejected,
                finish_twice_is_rejected,
                heartbeat_requires_the_current_lease,
                released_job_is_queued_again_without_burning_an_attempt,
                terminal_among_reports_only_finished_jobs,
                worker_requiring_a_current_schema_accepts_a_migrated_database,
                worker_requiring_a_current_schema_refuses_an_unmigrated_database,
            );
        }
    };
    (@case $backend:ident, $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = crate::$backend().await;
                crate::cases::$case(&fixture).await;
            }
        )+
    };
}

store_cases!(sqlite);
