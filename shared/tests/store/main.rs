//! The `JobStore` contract. Every case is written once, generic over the store, and
//! instantiated for each backend by `store_cases!`, so no behaviour exists for one backend only.

mod cases;

use std::sync::Arc;

use shared::store::{JobStore, PgStore, Schema, SqliteStore, StoreOptions};
use testkit::TestDatabase;

/// A store on a fresh database, and whatever keeps that database alive.
pub struct Fixture {
    pub store: Arc<dyn JobStore>,
    /// URL of the database behind `store` (migrated).
    pub url: String,
    /// URL of a second database that has never been migrated.
    pub empty_url: String,
    _cleanup: Cleanup,
}

/// What to remove when a case ends.
enum Cleanup {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Databases(#[allow(dead_code)] [TestDatabase; 2]),
}

pub async fn postgres() -> Fixture {
    let databases = [
        TestDatabase::create("runbox_test").await,
        TestDatabase::create("runbox_test_empty").await,
    ];
    let url = databases[0].url();
    let store = PgStore::connect(&url, Schema::Migrate, &StoreOptions::default())
        .await
        .expect("open postgres store");
    Fixture {
        store: Arc::new(store),
        url,
        empty_url: databases[1].url(),
        _cleanup: Cleanup::Databases(databases),
    }
}

pub async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = SqliteStore::connect(&url, Schema::Migrate, &StoreOptions::default())
        .await
        .expect("open sqlite store");
    Fixture {
        store: Arc::new(store),
        url,
        empty_url: format!("sqlite://{}", dir.path().join("empty.db").display()),
        _cleanup: Cleanup::Dir(dir),
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
                batched_finish_writes_held_leases_and_skips_fenced_ones,
                heartbeat_requires_the_current_lease,
                released_job_is_queued_again_without_burning_an_attempt,
                expired_lease_makes_job_claimable_again,
                live_leases_are_not_reaped,
                job_fails_with_worker_lost_after_its_last_attempt,
                late_write_from_a_reaped_worker_is_rejected,
                terminal_among_reports_only_finished_jobs,
                jobs_are_counted_by_status,
                list_pages_newest_first_without_gaps_or_repeats,
                list_orders_jobs_created_at_the_same_instant_by_id,
                list_filters_by_status,
                request_id_is_kept_with_the_job,
                same_idempotency_key_and_request_returns_the_existing_job,
                same_idempotency_key_with_another_request_is_flagged,
                expired_idempotency_key_names_a_new_job,
                cancelled_queued_job_is_never_claimed,
                cancelling_a_running_job_fences_off_its_worker,
                cancelling_a_finished_or_unknown_job_changes_nothing,
                queue_depth_counts_only_queued_jobs,
                retention_deletes_only_old_finished_jobs,
                worker_requiring_a_current_schema_accepts_a_migrated_database,
                worker_requiring_a_current_schema_refuses_an_unmigrated_database,
                listener_is_woken_when_another_store_queues_a_job,
                listener_is_woken_when_another_store_finishes_a_job,
                reads_and_empty_claims_wake_no_listener,
                claims_and_heartbeats_wake_no_waiting_request,
                keys_are_found_by_hash_until_revoked,
                two_keys_cannot_share_a_hash,
                jobs_keep_their_tenant_and_list_by_it,
                idempotency_keys_are_per_tenant,
                claims_interleave_tenants_least_served_first,
                claims_keep_each_tenant_within_its_running_quota,
                the_submission_bucket_refuses_past_its_rate_and_refills,
                the_busiest_tenants_are_counted_and_the_rest_summed,
                output_chunks_are_kept_in_order_and_read_after_a_point,
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
store_cases!(postgres);
