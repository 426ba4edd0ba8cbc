//! One function per store behaviour; `main.rs` runs each against every backend.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::value::RawValue;
use shared::job::{
    Cancelled, Enqueued, ErrorKind, Failure, Idempotency, JobId, JobStatus, Lease, Limits,
    ListCursor, ListQuery, NewJob, Outcome, Output, OutputChunk, OutputStream, SourcePosition,
    Usage,
};
use shared::store::{JobStore, Reaped, Schema, StoreError, StoreEvents, StoreOptions, TenantLoad};
use shared::tenant::{ApiKey, HashedKey, KeyId, QuotaOverrides, Revoked, Tenant};
use tokio::sync::{broadcast, watch};

use crate::Fixture;

const LEASE: Duration = Duration::from_secs(15);

fn new_job(script: &str) -> NewJob {
    NewJob {
        id: JobId::new(),
        script: script.to_owned(),
        limits: Limits {
            timeout: Duration::from_millis(2500),
            memory_mb: 128,
        },
        created_at: Utc::now(),
        idempotency: None,
        request_id: None,
        tenant: Tenant::NONE,
        args: None,
        webhook_url: None,
    }
}

fn keyed_job(key: &str, script: &str, window: Duration) -> NewJob {
    NewJob {
        idempotency: Some(Idempotency {
            key: key.to_owned(),
            request_hash: format!("hash-of-{script}"),
            window,
        }),
        ..new_job(script)
    }
}

async fn enqueue_n(store: &dyn JobStore, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let job = new_job(&format!("def main():\n    return {i}\n"));
        store.enqueue(&job).await.expect("enqueue");
        ids.push(job.id);
        // Distinct creation times so "oldest first" has one right answer.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ids
}

fn success(result: &str) -> Outcome {
    Outcome {
        result: Ok(RawValue::from_string(result.to_owned()).expect("valid json")),
        stdout: Output {
            text: "printed\n".into(),
            truncated: false,
        },
        stderr: Output::default(),
        usage: Usage {
            wall_ms: Some(12),
            cpu_ms: Some(7),
            peak_memory_bytes: Some(1 << 20),
            exit_code: Some(0),
            signal: None,
        },
    }
}

pub(crate) async fn enqueued_job_is_queued_and_readable(f: &Fixture) {
    let job = new_job("def main():\n    return 1\n");
    f.store.enqueue(&job).await.expect("enqueue");
    let stored = f.store.get(job.id).await.expect("get").expect("present");
    assert_eq!(stored.status, JobStatus::Queued);
    assert_eq!(stored.limits, job.limits);
    assert_eq!(stored.attempt, 0);
    assert!(stored.started_at.is_none() && stored.finished_at.is_none());
    assert!(
        (stored.created_at - job.created_at)
            .num_milliseconds()
            .abs()
            < 1
    );
}

pub(crate) async fn unknown_job_is_none(f: &Fixture) {
    assert!(f.store.get(JobId::new()).await.expect("get").is_none());
}

pub(crate) async fn claim_hands_out_oldest_first(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 5).await;
    let mut claimed = Vec::new();
    for _ in 0..5 {
        let batch = f.store.claim("w", 1, LEASE).await.expect("claim");
        claimed.extend(batch.into_iter().map(|j| j.lease.job_id));
    }
    assert_eq!(claimed, ids);
    let batch = f.store.claim("w", 3, LEASE).await.expect("claim");
    assert!(batch.is_empty());
}

pub(crate) async fn claim_takes_at_most_the_requested_number(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 5).await;
    let batch = f.store.claim("w", 3, LEASE).await.expect("claim");
    let got: Vec<JobId> = batch.iter().map(|j| j.lease.job_id).collect();
    assert_eq!(got, ids[..3].to_vec());
    assert!(f
        .store
        .claim("w", 0, LEASE)
        .await
        .expect("claim")
        .is_empty());
}

pub(crate) async fn claim_records_worker_attempt_and_lease(f: &Fixture) {
    let job = new_job("def main():\n    return 1\n");
    f.store.enqueue(&job).await.expect("enqueue");
    let claimed = f.store.claim("worker-a", 1, LEASE).await.expect("claim");
    let claimed = claimed.first().expect("one job");
    assert_eq!(claimed.lease.worker_id, "worker-a");
    assert_eq!(claimed.lease.attempt, 1);
    assert_eq!(claimed.script, job.script);
    assert_eq!(claimed.limits, job.limits);
    assert!(
        (claimed.created_at - job.created_at)
            .num_milliseconds()
            .abs()
            < 1
    );
    let stored = f.store.get(job.id).await.expect("get").expect("present");
    assert_eq!(stored.status, JobStatus::Running);
    assert_eq!(stored.worker_id.as_deref(), Some("worker-a"));
    assert!(stored.started_at.is_some());
}

pub(crate) async fn concurrent_claimers_never_receive_the_same_job(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 40).await;
    let mut claimers = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&f.store);
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim(&format!("w{w}"), 3, LEASE)
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|j| j.lease.job_id));
            }
        }));
    }
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.expect("claimer"));
    }
    let unique: HashSet<JobId> = all.iter().copied().collect();
    assert_eq!(all.len(), ids.len(), "every job claimed exactly once");
    assert_eq!(unique, ids.into_iter().collect());
}

pub(crate) async fn finish_records_the_outcome(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 2).await;
    let batch = f.store.claim("w", 2, LEASE).await.expect("claim");
    let (first, second) = (&batch[0].lease, &batch[1].lease);

    f.store
        .finish(first, &success(r#"{"big":18446744073709551623}"#))
        .await
        .expect("finish");
    let done = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        done.result.as_ref().map(|r| r.get()),
        Some(r#"{"big":18446744073709551623}"#)
    );
    assert_eq!(
        done.stdout.as_ref().map(|o| o.text.as_str()),
        Some("printed\n")
    );
    assert_eq!(done.usage.wall_ms, Some(12));
    assert!(done.finished_at.is_some());

    let failed = Outcome {
        result: Err(Failure {
            kind: ErrorKind::SyntaxError,
            message: "SyntaxError: bad (line 3, column 7)".into(),
            position: Some(SourcePosition { line: 3, column: 7 }),
        }),
        ..success("null")
    };
    f.store.finish(second, &failed).await.expect("finish");
    let done = f.store.get(ids[1]).await.expect("get").expect("present");
    assert_eq!(done.status, JobStatus::Failed);
    assert!(done.result.is_none());
    let failure = done.failure.expect("failure recorded");
    assert_eq!(failure.kind, ErrorKind::SyntaxError);
    assert_eq!(
        failure.position,
        Some(SourcePosition { line: 3, column: 7 })
    );
}

pub(crate) async fn finish_by_the_wrong_worker_or_attempt_is_rejected(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    let batch = f.store.claim("rightful", 1, LEASE).await.expect("claim");
    let lease = batch[0].lease.clone();
    let impostor = Lease {
        worker_id: "impostor".into(),
        ..lease.clone()
    };
    let stale = Lease {
        attempt: lease.attempt + 1,
        ..lease.clone()
    };
    for wrong in [&impostor, &stale] {
        let err = f
            .store
            .finish(wrong, &success("1"))
            .await
            .expect_err("fenced");
        assert!(
            matches!(err, StoreError::LeaseLost(id) if id == ids[0]),
            "{err}"
        );
    }
    let still = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(still.status, JobStatus::Running);
    f.store
        .finish(&lease, &success("1"))
        .await
        .expect("rightful finish");
}

pub(crate) async fn finish_twice_is_rejected(f: &Fixture) {
    enqueue_n(f.store.as_ref(), 1).await;
    let batch = f.store.claim("w", 1, LEASE).await.expect("claim");
    let lease = &batch[0].lease;
    f.store.finish(lease, &success("1")).await.expect("first");
    let err = f
        .store
        .finish(lease, &success("2"))
        .await
        .expect_err("second");
    assert!(matches!(err, StoreError::LeaseLost(_)));
    let job = f
        .store
        .get(lease.job_id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(job.result.as_ref().map(|r| r.get()), Some("1"));
}

pub(crate) async fn batched_finish_writes_held_leases_and_skips_fenced_ones(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 3).await;
    let batch = f.store.claim("w", 3, LEASE).await.expect("claim");
    let stale = Lease {
        attempt: batch[1].lease.attempt + 1,
        ..batch[1].lease.clone()
    };
    let finished = vec![
        (batch[0].lease.clone(), success("10")),
        (stale, success("11")),
        (batch[2].lease.clone(), success("12")),
    ];
    let mut written = f.store.finish_many(&finished).await.expect("batch");
    written.sort();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(written, expected);
    let skipped = f.store.get(ids[1]).await.expect("get").expect("present");
    assert_eq!(skipped.status, JobStatus::Running);
    let third = f.store.get(ids[2]).await.expect("get").expect("present");
    assert_eq!(third.result.as_ref().map(|r| r.get()), Some("12"));
    assert!(f.store.finish_many(&[]).await.expect("empty").is_empty());
}

pub(crate) async fn heartbeat_requires_the_current_lease(f: &Fixture) {
    enqueue_n(f.store.as_ref(), 1).await;
    let batch = f.store.claim("w", 1, LEASE).await.expect("claim");
    let lease = &batch[0].lease;
    f.store.heartbeat(lease, LEASE).await.expect("heartbeat");
    let impostor = Lease {
        worker_id: "other".into(),
        ..lease.clone()
    };
    assert!(matches!(
        f.store.heartbeat(&impostor, LEASE).await,
        Err(StoreError::LeaseLost(_))
    ));
    f.store.finish(lease, &success("1")).await.expect("finish");
    assert!(matches!(
        f.store.heartbeat(lease, LEASE).await,
        Err(StoreError::LeaseLost(_))
    ));
}

pub(crate) async fn released_job_is_queued_again_without_burning_an_attempt(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    let batch = f.store.claim("w", 1, LEASE).await.expect("claim");
    f.store.release(&batch[0].lease).await.expect("release");
    let job = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.attempt, 0);
    let again = f.store.claim("w2", 1, LEASE).await.expect("claim");
    assert_eq!(again[0].lease.attempt, 1);
    assert!(matches!(
        f.store.release(&batch[0].lease).await,
        Err(StoreError::LeaseLost(_))
    ));
}

const SHORT_LEASE: Duration = Duration::from_millis(1);

async fn let_leases_expire() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

pub(crate) async fn expired_lease_makes_job_claimable_again(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    f.store.claim("dead", 1, SHORT_LEASE).await.expect("claim");
    let_leases_expire().await;
    let reaped = f.store.reap_expired(3).await.expect("reap");
    assert_eq!(
        reaped,
        Reaped {
            requeued: 1,
            failed: 0
        }
    );
    let job = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(job.status, JobStatus::Queued);
    let again = f.store.claim("alive", 1, LEASE).await.expect("claim");
    assert_eq!(again[0].lease.job_id, ids[0]);
    assert_eq!(
        again[0].lease.attempt, 2,
        "the lost run counts as an attempt"
    );
}

pub(crate) async fn live_leases_are_not_reaped(f: &Fixture) {
    enqueue_n(f.store.as_ref(), 1).await;
    f.store.claim("alive", 1, LEASE).await.expect("claim");
    let reaped = f.store.reap_expired(3).await.expect("reap");
    assert_eq!(reaped, Reaped::default());
}

pub(crate) async fn job_fails_with_worker_lost_after_its_last_attempt(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    for attempt in 1..=2 {
        let claimed = f.store.claim("dying", 1, SHORT_LEASE).await.expect("claim");
        assert_eq!(claimed[0].lease.attempt, attempt);
        let_leases_expire().await;
        f.store.reap_expired(2).await.expect("reap");
    }
    let job = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempt, 2);
    let failure = job.failure.expect("failure");
    assert_eq!(failure.kind, ErrorKind::WorkerLost);
    assert!(job.finished_at.is_some());
    assert_eq!(f.store.terminal_among(&ids).await.expect("terminal"), ids);
}

pub(crate) async fn late_write_from_a_reaped_worker_is_rejected(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    let first = f.store.claim("slow", 1, SHORT_LEASE).await.expect("claim");
    let_leases_expire().await;
    f.store.reap_expired(3).await.expect("reap");
    let second = f.store.claim("fast", 1, LEASE).await.expect("claim");
    let late = f.store.finish(&first[0].lease, &success("1")).await;
    assert!(matches!(late, Err(StoreError::LeaseLost(_))));
    f.store
        .finish(&second[0].lease, &success("2"))
        .await
        .expect("current lease writes");
    let job = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(job.result.as_ref().map(|r| r.get()), Some("2"));
    assert_eq!(job.worker_id.as_deref(), Some("fast"));
}

pub(crate) async fn terminal_among_reports_only_finished_jobs(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 3).await;
    let batch = f.store.claim("w", 2, LEASE).await.expect("claim");
    f.store
        .finish(&batch[0].lease, &success("1"))
        .await
        .expect("finish");
    let mut asked = ids.clone();
    asked.push(JobId::new());
    let finished = f.store.terminal_among(&asked).await.expect("query");
    assert_eq!(finished, vec![ids[0]]);
    assert!(f.store.terminal_among(&[]).await.expect("empty").is_empty());
}

pub(crate) async fn same_idempotency_key_and_request_returns_the_existing_job(f: &Fixture) {
    let first = keyed_job("key-1", "a", Duration::from_secs(3600));
    assert_eq!(
        f.store.enqueue(&first).await.expect("enqueue"),
        Enqueued::Created
    );
    let replay = keyed_job("key-1", "a", Duration::from_secs(3600));
    assert_eq!(
        f.store.enqueue(&replay).await.expect("enqueue"),
        Enqueued::Existing {
            id: first.id,
            same_request: true
        }
    );
    assert!(f.store.get(replay.id).await.expect("get").is_none());
    let other_key = keyed_job("key-2", "a", Duration::from_secs(3600));
    assert_eq!(
        f.store.enqueue(&other_key).await.expect("enqueue"),
        Enqueued::Created
    );
}

pub(crate) async fn same_idempotency_key_with_another_request_is_flagged(f: &Fixture) {
    let first = keyed_job("key-1", "a", Duration::from_secs(3600));
    f.store.enqueue(&first).await.expect("enqueue");
    let conflict = keyed_job("key-1", "b", Duration::from_secs(3600));
    assert_eq!(
        f.store.enqueue(&conflict).await.expect("enqueue"),
        Enqueued::Existing {
            id: first.id,
            same_request: false
        }
    );
}

pub(crate) async fn expired_idempotency_key_names_a_new_job(f: &Fixture) {
    let first = keyed_job("key-1", "a", Duration::from_millis(10));
    f.store.enqueue(&first).await.expect("enqueue");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let later = keyed_job("key-1", "a", Duration::from_millis(10));
    assert_eq!(
        f.store.enqueue(&later).await.expect("enqueue"),
        Enqueued::Created
    );
    assert!(f.store.get(later.id).await.expect("get").is_some());
}

pub(crate) async fn cancelled_queued_job_is_never_claimed(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    assert_eq!(
        f.store.cancel(ids[0]).await.expect("cancel"),
        Cancelled::Done
    );
    let job = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.failure.map(|f| f.kind), Some(ErrorKind::Cancelled));
    assert!(f
        .store
        .claim("w", 5, LEASE)
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(f.store.terminal_among(&ids).await.expect("terminal"), ids);
}

pub(crate) async fn cancelling_a_running_job_fences_off_its_worker(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    let claimed = f.store.claim("w", 1, LEASE).await.expect("claim");
    assert_eq!(
        f.store.cancel(ids[0]).await.expect("cancel"),
        Cancelled::Done
    );
    assert!(matches!(
        f.store.heartbeat(&claimed[0].lease, LEASE).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        f.store.finish(&claimed[0].lease, &success("1")).await,
        Err(StoreError::LeaseLost(_))
    ));
    let job = f.store.get(ids[0]).await.expect("get").expect("present");
    assert_eq!(job.status, JobStatus::Cancelled);
}

pub(crate) async fn cancelling_a_finished_or_unknown_job_changes_nothing(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 1).await;
    let claimed = f.store.claim("w", 1, LEASE).await.expect("claim");
    f.store
        .finish(&claimed[0].lease, &success("1"))
        .await
        .expect("finish");
    assert_eq!(
        f.store.cancel(ids[0]).await.expect("cancel"),
        Cancelled::AlreadyFinished(JobStatus::Succeeded)
    );
    assert_eq!(
        f.store.cancel(JobId::new()).await.expect("cancel"),
        Cancelled::NotFound
    );
}

pub(crate) async fn queue_depth_counts_only_queued_jobs(f: &Fixture) {
    enqueue_n(f.store.as_ref(), 3).await;
    f.store.claim("w", 1, LEASE).await.expect("claim");
    assert_eq!(f.store.queue_depth().await.expect("depth"), 2);
}

pub(crate) async fn retention_deletes_only_old_finished_jobs(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 4).await;
    let claimed = f.store.claim("w", 3, LEASE).await.expect("claim");
    for job in &claimed[..2] {
        let printed = OutputChunk {
            seq: 1,
            stream: OutputStream::Stdout,
            text: "live\n".to_owned(),
        };
        f.store
            .append_output(job.lease.job_id, &[printed])
            .await
            .expect("append");
        f.store
            .finish(&job.lease, &success("1"))
            .await
            .expect("finish");
    }
    // Two finished, one running, one queued.
    let none = f
        .store
        .delete_finished_before(Utc::now() - chrono::Duration::hours(1), 100)
        .await
        .expect("delete");
    assert_eq!(none, 0, "recent jobs are kept");
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        f.store
            .delete_finished_before(cutoff, 1)
            .await
            .expect("delete"),
        1
    );
    assert_eq!(
        f.store
            .delete_finished_before(cutoff, 100)
            .await
            .expect("delete"),
        1
    );
    assert_eq!(
        f.store
            .delete_finished_before(cutoff, 100)
            .await
            .expect("delete"),
        0
    );
    assert!(f.store.get(ids[0]).await.expect("get").is_none());
    assert!(
        f.store
            .output_after(ids[0], 0, 10)
            .await
            .expect("read")
            .is_empty(),
        "a deleted job's output goes with it"
    );
    assert!(
        f.store.get(ids[2]).await.expect("get").is_some(),
        "running job kept"
    );
    assert!(
        f.store.get(ids[3]).await.expect("get").is_some(),
        "queued job kept"
    );
}

pub(crate) async fn jobs_are_counted_by_status(f: &Fixture) {
    assert!(f.store.count_by_status().await.expect("count").is_empty());
    enqueue_n(f.store.as_ref(), 4).await;
    let batch = f.store.claim("w", 2, LEASE).await.expect("claim");
    f.store
        .finish(&batch[0].lease, &success("1"))
        .await
        .expect("finish");
    let mut counts = f.store.count_by_status().await.expect("count");
    counts.sort_by_key(|(status, _)| status.as_str());
    assert_eq!(
        counts,
        vec![
            (JobStatus::Queued, 2),
            (JobStatus::Running, 1),
            (JobStatus::Succeeded, 1)
        ]
    );
}

pub(crate) async fn worker_requiring_a_current_schema_accepts_a_migrated_database(f: &Fixture) {
    let store = shared::store::connect(&f.url, Schema::RequireCurrent, &StoreOptions::default())
        .await
        .expect("migrated database is accepted");
    store.ping().await.expect("ping");
}

pub(crate) async fn worker_requiring_a_current_schema_refuses_an_unmigrated_database(f: &Fixture) {
    let result = shared::store::connect(
        &f.empty_url,
        Schema::RequireCurrent,
        &StoreOptions::default(),
    )
    .await;
    let Err(StoreError::Schema(message)) = result else {
        panic!("an unmigrated database must be refused");
    };
    assert!(message.contains("start `api`"), "{message}");
}

/// Follows `next` cursors from the first page to the end, `limit` jobs at a time.
async fn list_all(store: &dyn JobStore, status: Option<JobStatus>, limit: u32) -> Vec<JobId> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                tenant: None,
                status,
                after,
                limit,
            })
            .await
            .expect("list");
        assert!(
            page.len() <= limit as usize,
            "a page holds at most `limit` jobs"
        );
        let Some(last) = page.last() else {
            return seen;
        };
        after = Some(ListCursor::after(last));
        seen.extend(page.iter().map(|job| job.id));
    }
}

pub(crate) async fn list_pages_newest_first_without_gaps_or_repeats(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 5).await;
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(list_all(f.store.as_ref(), None, 2).await, newest_first);
    assert_eq!(list_all(f.store.as_ref(), None, 100).await, newest_first);
}

pub(crate) async fn list_orders_jobs_created_at_the_same_instant_by_id(f: &Fixture) {
    let created_at = Utc::now();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let job = NewJob {
            created_at,
            ..new_job("def main():\n    return 1\n")
        };
        f.store.enqueue(&job).await.expect("enqueue");
        ids.push(job.id);
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(list_all(f.store.as_ref(), None, 1).await, ids);
}

pub(crate) async fn list_filters_by_status(f: &Fixture) {
    let ids = enqueue_n(f.store.as_ref(), 4).await;
    let batch = f.store.claim("w", 2, LEASE).await.expect("claim");
    f.store
        .finish(&batch[0].lease, &success("1"))
        .await
        .expect("finish");
    let store = f.store.as_ref();
    assert_eq!(
        list_all(store, Some(JobStatus::Queued), 1).await,
        vec![ids[3], ids[2]]
    );
    assert_eq!(
        list_all(store, Some(JobStatus::Running), 1).await,
        vec![ids[1]]
    );
    assert_eq!(
        list_all(store, Some(JobStatus::Succeeded), 10).await,
        vec![ids[0]]
    );
    assert!(list_all(store, Some(JobStatus::Failed), 10)
        .await
        .is_empty());
    let listed = store
        .list(&ListQuery {
            tenant: None,
            status: Some(JobStatus::Succeeded),
            after: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(listed[0].attempt, 1);
    assert_eq!(listed[0].wall_ms, Some(12));
    assert_eq!(listed[0].worker_id.as_deref(), Some("w"));
    assert!(listed[0].finished_at.is_some());
}

pub(crate) async fn request_id_is_kept_with_the_job(f: &Fixture) {
    let job = NewJob {
        request_id: Some("req-42".into()),
        ..new_job("def main():\n    return 1\n")
    };
    f.store.enqueue(&job).await.expect("enqueue");
    let stored = f.store.get(job.id).await.expect("get").expect("present");
    assert_eq!(stored.request_id.as_deref(), Some("req-42"));
    let listed = f
        .store
        .list(&ListQuery {
            tenant: None,
            status: None,
            after: None,
            limit: 1,
        })
        .await
        .expect("list");
    assert_eq!(listed[0].request_id.as_deref(), Some("req-42"));
    let claimed = f.store.claim("w", 1, LEASE).await.expect("claim");
    assert_eq!(claimed[0].request_id.as_deref(), Some("req-42"));
}

/// How long a listener may take to be woken; generous, since only "woken at all" is asserted.
const WAKE_DEADLINE: Duration = Duration::from_secs(5);

/// A second store on the same database that listens as workers and the API do: on SQLite, what
/// another process opening the same file sees.
async fn listener(f: &Fixture) -> Arc<dyn JobStore> {
    let options = StoreOptions {
        listen_queued: true,
        listen_finished: true,
        ..StoreOptions::default()
    };
    shared::store::connect(&f.url, Schema::RequireCurrent, &options)
        .await
        .expect("open the listening store")
}

/// The next "store changed" mark; never, on a backend that does not send them.
async fn next_change(changed: &mut watch::Receiver<()>) {
    if changed.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next "job finished" id; never, on a backend that does not send them.
async fn next_finished(finished: &mut broadcast::Receiver<JobId>) -> Option<JobId> {
    match finished.recv().await {
        Ok(id) => Some(id),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

pub(crate) async fn listener_is_woken_when_another_store_queues_a_job(f: &Fixture) {
    let listener = listener(f).await;
    let events = listener
        .events()
        .expect("a store asked to listen pushes wake-ups");
    let job = new_job("def main():\n    return 1\n");
    f.store.enqueue(&job).await.expect("enqueue");
    // As an idle worker does: claim on each wake-up until the job is there. No poll runs, so
    // only a wake-up can get the job claimed.
    let claimed = tokio::time::timeout(WAKE_DEADLINE, async {
        loop {
            events.queued.notified().await;
            let claimed = listener.claim("listener", 1, LEASE).await.expect("claim");
            if !claimed.is_empty() {
                return claimed;
            }
        }
    })
    .await
    .expect("the listener is woken by another store's enqueue");
    assert_eq!(claimed[0].lease.job_id, job.id);
}

pub(crate) async fn listener_is_woken_when_another_store_finishes_a_job(f: &Fixture) {
    let listener = listener(f).await;
    let events = listener
        .events()
        .expect("a store asked to listen pushes wake-ups");
    let mut finished = events.finished.subscribe();
    let mut changed = events.changed.subscribe();
    let job = new_job("def main():\n    return 1\n");
    f.store.enqueue(&job).await.expect("enqueue");
    let claimed = f.store.claim("w", 1, LEASE).await.expect("claim");
    f.store
        .finish(&claimed[0].lease, &success("1"))
        .await
        .expect("finish");
    // As the API's completion waiter does: a finished id ends the wait at once (Postgres); a
    // "store changed" mark (SQLite) calls for asking which awaited jobs are terminal.
    tokio::time::timeout(WAKE_DEADLINE, async {
        loop {
            tokio::select! {
                id = next_finished(&mut finished) => if id == Some(job.id) {
                    return;
                },
                () = next_change(&mut changed) => {
                    let done = listener.terminal_among(&[job.id]).await.expect("query");
                    if done.contains(&job.id) {
                        return;
                    }
                }
            }
        }
    })
    .await
    .expect("the listener is woken by another store's finish");
}

/// Which wake-up, if any, reached the listener within a quiet period. A wake-up follows the
/// statement that caused it within microseconds; the period only has to be longer than that.
/// `workers_too`: whether a "jobs queued" wake-up counts.
async fn woken_while_quiet(
    events: &StoreEvents,
    changed: &mut watch::Receiver<()>,
    finished: &mut broadcast::Receiver<JobId>,
    workers_too: bool,
) -> Option<&'static str> {
    let queued = async {
        if workers_too {
            events.queued.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::time::timeout(Duration::from_millis(300), async {
        tokio::select! {
            () = queued => "queued",
            () = next_change(changed) => "changed",
            _ = next_finished(finished) => "finished",
        }
    })
    .await
    .ok()
}

pub(crate) async fn reads_and_empty_claims_wake_no_listener(f: &Fixture) {
    let listener = listener(f).await;
    let events = listener
        .events()
        .expect("a store asked to listen pushes wake-ups");
    let mut finished = events.finished.subscribe();
    let mut changed = events.changed.subscribe();
    // What idle workers and an idle API do, from both sides: nothing here writes a row.
    for store in [f.store.as_ref(), listener.as_ref()] {
        store.ping().await.expect("ping");
        assert!(store.get(JobId::new()).await.expect("get").is_none());
        assert_eq!(store.queue_depth().await.expect("depth"), 0);
        assert!(store
            .claim("idle", 4, LEASE)
            .await
            .expect("claim")
            .is_empty());
        assert_eq!(
            store.reap_expired(3).await.expect("reap"),
            Reaped::default()
        );
        assert!(store
            .terminal_among(&[JobId::new()])
            .await
            .expect("query")
            .is_empty());
        let cutoff = Utc::now();
        assert_eq!(
            store
                .delete_finished_before(cutoff, 500)
                .await
                .expect("retention"),
            0
        );
    }
    let woken = woken_while_quiet(&events, &mut changed, &mut finished, true).await;
    assert_eq!(woken, None, "an idle database woke the listener");
}

pub(crate) async fn claims_and_heartbeats_wake_no_waiting_request(f: &Fixture) {
    let listener = listener(f).await;
    let events = listener
        .events()
        .expect("a store asked to listen pushes wake-ups");
    let mut finished = events.finished.subscribe();
    let mut changed = events.changed.subscribe();
    // A job's busiest moments before it ends: queued, claimed, its lease renewed. None of them
    // can end a wait, so none may cost waiting requests a re-check.
    f.store
        .enqueue(&new_job("def main():\n    return 1\n"))
        .await
        .expect("enqueue");
    let claimed = f.store.claim("w", 1, LEASE).await.expect("claim");
    f.store
        .heartbeat(&claimed[0].lease, LEASE)
        .await
        .expect("heartbeat");
    let woken = woken_while_quiet(&events, &mut changed, &mut finished, false).await;
    assert_eq!(
        woken, None,
        "a job that has not finished woke waiting requests"
    );
}

fn api_key(name: &str, hash: &str) -> HashedKey {
    HashedKey {
        key: ApiKey {
            id: KeyId::new(),
            name: name.to_owned(),
            prefix: format!("rbx_{name}"),
            admin: false,
            created_at: Utc::now(),
            revoked_at: None,
            quotas: QuotaOverrides::default(),
        },
        hash: hash.to_owned(),
    }
}

pub(crate) async fn keys_are_found_by_hash_until_revoked(f: &Fixture) {
    let store = f.store.as_ref();
    assert!(!store.has_active_key().await.expect("read"));
    let mut admin = api_key("ops", "hash-ops");
    admin.key.admin = true;
    admin.key.quotas = QuotaOverrides {
        max_running: Some(3),
        max_queued: Some(40),
        submissions_per_minute: Some(600),
        max_timeout: Some(Duration::from_millis(2500)),
        max_memory_mb: Some(512),
    };
    let plain = api_key("ci", "hash-ci");
    store.create_key(&admin).await.expect("create");
    store.create_key(&plain).await.expect("create");
    assert!(store.has_active_key().await.expect("read"));

    let found = store
        .active_key_by_hash("hash-ops")
        .await
        .expect("lookup")
        .expect("present");
    assert_eq!(found.hash, "hash-ops");
    assert_eq!(found.key.id, admin.key.id);
    assert!(found.key.admin);
    assert_eq!(found.key.quotas, admin.key.quotas);
    assert!(store
        .active_key_by_hash("hash-nobody")
        .await
        .expect("lookup")
        .is_none());

    assert_eq!(
        store.revoke_key(plain.key.id).await.expect("revoke"),
        Revoked::Done
    );
    assert_eq!(
        store.revoke_key(plain.key.id).await.expect("revoke"),
        Revoked::Already
    );
    assert_eq!(
        store.revoke_key(KeyId::new()).await.expect("revoke"),
        Revoked::NotFound
    );
    assert!(store
        .active_key_by_hash("hash-ci")
        .await
        .expect("lookup")
        .is_none());

    let listed = store.list_keys().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["ops", "ci"], "oldest first");
    assert!(listed[0].revoked_at.is_none());
    assert!(listed[1].revoked_at.is_some());

    store.revoke_key(admin.key.id).await.expect("revoke");
    assert!(!store.has_active_key().await.expect("read"));
}

pub(crate) async fn two_keys_cannot_share_a_hash(f: &Fixture) {
    let store = f.store.as_ref();
    store
        .create_key(&api_key("a", "same-hash"))
        .await
        .expect("create");
    assert!(store.create_key(&api_key("b", "same-hash")).await.is_err());
}

pub(crate) async fn jobs_keep_their_tenant_and_list_by_it(f: &Fixture) {
    let store = f.store.as_ref();
    let a = Tenant::key(KeyId::new());
    let b = Tenant::key(KeyId::new());
    let mut ids = Vec::new();
    for (i, tenant) in [a, b, a, Tenant::NONE].into_iter().enumerate() {
        let job = NewJob {
            tenant,
            ..new_job(&format!("def main():\n    return {i}\n"))
        };
        store.enqueue(&job).await.expect("enqueue");
        assert_eq!(
            store
                .get(job.id)
                .await
                .expect("get")
                .expect("present")
                .tenant,
            tenant
        );
        ids.push(job.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let listed = |tenant: Option<Tenant>, status: Option<JobStatus>| async move {
        store
            .list(&ListQuery {
                tenant,
                status,
                after: None,
                limit: 10,
            })
            .await
            .expect("list")
            .iter()
            .map(|job| job.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(Some(a), None).await, vec![ids[2], ids[0]]);
    assert_eq!(
        listed(Some(a), Some(JobStatus::Queued)).await,
        vec![ids[2], ids[0]]
    );
    assert!(listed(Some(a), Some(JobStatus::Running)).await.is_empty());
    assert_eq!(listed(Some(b), None).await, vec![ids[1]]);
    assert_eq!(listed(Some(Tenant::NONE), None).await, vec![ids[3]]);
    assert_eq!(listed(None, None).await.len(), 4);
}

pub(crate) async fn idempotency_keys_are_per_tenant(f: &Fixture) {
    let store = f.store.as_ref();
    let window = Duration::from_secs(60);
    let a = NewJob {
        tenant: Tenant::key(KeyId::new()),
        ..keyed_job("order-1", "def main():\n    return 1\n", window)
    };
    let b = NewJob {
        tenant: Tenant::key(KeyId::new()),
        ..keyed_job("order-1", "def main():\n    return 2\n", window)
    };
    assert_eq!(store.enqueue(&a).await.expect("a"), Enqueued::Created);
    assert_eq!(store.enqueue(&b).await.expect("b"), Enqueued::Created);
    let again = NewJob {
        id: JobId::new(),
        ..a.clone()
    };
    assert_eq!(
        store.enqueue(&again).await.expect("a again"),
        Enqueued::Existing {
            id: a.id,
            same_request: true
        }
    );
}

/// Queues `n` jobs of `tenant`, a little apart so their age order is clear.
async fn enqueue_for(store: &dyn JobStore, tenant: Tenant, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let job = NewJob {
            tenant,
            ..new_job(&format!("def main():\n    return {i}\n"))
        };
        store.enqueue(&job).await.expect("enqueue");
        ids.push(job.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ids
}

async fn claim_one(store: &dyn JobStore) -> Option<JobId> {
    let claimed = store.claim("w", 1, LEASE).await.expect("claim");
    claimed.first().map(|job| job.lease.job_id)
}

pub(crate) async fn claims_interleave_tenants_least_served_first(f: &Fixture) {
    let store = f.store.as_ref();
    let a = Tenant::key(KeyId::new());
    let b = Tenant::key(KeyId::new());
    let a_jobs = enqueue_for(store, a, 5).await;
    let b_jobs = enqueue_for(store, b, 1).await;
    // Both have nothing running: the older job goes first. Then B has fewer running.
    assert_eq!(claim_one(store).await, Some(a_jobs[0]));
    assert_eq!(claim_one(store).await, Some(b_jobs[0]));
    assert_eq!(claim_one(store).await, Some(a_jobs[1]));
    // One claim of several takes turns between tenants too.
    let c = Tenant::key(KeyId::new());
    let c_jobs = enqueue_for(store, c, 3).await;
    let claimed: Vec<JobId> = store
        .claim("w", 3, LEASE)
        .await
        .expect("claim")
        .iter()
        .map(|job| job.lease.job_id)
        .collect();
    assert_eq!(claimed.len(), 3);
    assert!(
        claimed.contains(&c_jobs[0]) && claimed.contains(&c_jobs[1]),
        "{claimed:?}"
    );
    assert!(claimed.contains(&a_jobs[2]), "{claimed:?}");
}

pub(crate) async fn claims_keep_each_tenant_within_its_running_quota(f: &Fixture) {
    let store = f.store.as_ref();
    let mut capped = api_key("capped", "hash-capped");
    capped.key.quotas.max_running = Some(1);
    store.create_key(&capped).await.expect("create");
    let tenant = Tenant::key(capped.key.id);
    enqueue_for(store, tenant, 3).await;
    let first = store.claim("w", 3, LEASE).await.expect("claim");
    assert_eq!(first.len(), 1, "a quota of one running job");
    assert!(store.claim("w", 3, LEASE).await.expect("claim").is_empty());
    store
        .finish(&first[0].lease, &success("1"))
        .await
        .expect("finish");
    assert_eq!(store.claim("w", 3, LEASE).await.expect("claim").len(), 1);

    // The server's default applies to keys without their own; jobs of no key have none.
    let options = StoreOptions {
        tenant_max_running: 2,
        ..StoreOptions::default()
    };
    let defaulted = shared::store::connect(&f.url, Schema::Migrate, &options)
        .await
        .expect("connect");
    let plain = Tenant::key(KeyId::new());
    enqueue_for(store, plain, 4).await;
    enqueue_for(store, Tenant::NONE, 4).await;
    let mut tenants = Vec::new();
    for job in defaulted.claim("w", 10, LEASE).await.expect("claim") {
        let job = store
            .get(job.lease.job_id)
            .await
            .expect("get")
            .expect("present");
        tenants.push(job.tenant);
    }
    let of = |tenant: Tenant| tenants.iter().filter(|t| **t == tenant).count();
    assert_eq!(of(plain), 2, "the default quota");
    assert_eq!(of(Tenant::NONE), 4, "no quota without a key");
    assert_eq!(of(tenant), 0, "the key's own quota is still full");
}

pub(crate) async fn the_submission_bucket_refuses_past_its_rate_and_refills(f: &Fixture) {
    let store = f.store.as_ref();
    let key = api_key("bursty", "hash-bursty");
    store.create_key(&key).await.expect("create");
    let id = key.key.id;
    let start = Utc::now();
    for _ in 0..3 {
        assert_eq!(
            store.take_submission(id, 3, start).await.expect("take"),
            None
        );
    }
    let wait = store
        .take_submission(id, 3, start)
        .await
        .expect("take")
        .expect("the bucket is empty");
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "one token every 20 s: {wait:?}"
    );
    let later = start + chrono::Duration::seconds(20);
    assert_eq!(
        store.take_submission(id, 3, later).await.expect("take"),
        None
    );
    assert!(store
        .take_submission(id, 3, later)
        .await
        .expect("take")
        .is_some());
}

pub(crate) async fn the_busiest_tenants_are_counted_and_the_rest_summed(f: &Fixture) {
    let store = f.store.as_ref();
    let a = Tenant::key(KeyId::new());
    let b = Tenant::key(KeyId::new());
    enqueue_for(store, a, 3).await;
    enqueue_for(store, b, 2).await;
    enqueue_for(store, Tenant::NONE, 1).await;
    store.claim("w", 1, LEASE).await.expect("claim");
    let loads = store.busiest_tenants(1).await.expect("count");
    assert_eq!(
        loads,
        vec![
            TenantLoad {
                tenant: Some(a),
                queued: 2,
                running: 1
            },
            TenantLoad {
                tenant: None,
                queued: 3,
                running: 0
            },
        ]
    );
    assert_eq!(store.queued_of(b).await.expect("count"), 2);
}

pub(crate) async fn output_chunks_are_kept_in_order_and_read_after_a_point(f: &Fixture) {
    let store = f.store.as_ref();
    let ids = enqueue_n(store, 1).await;
    let chunk = |seq: u32, stream: OutputStream, text: &str| OutputChunk {
        seq,
        stream,
        text: text.to_owned(),
    };
    store
        .append_output(
            ids[0],
            &[
                chunk(1, OutputStream::Stdout, "one\n"),
                chunk(2, OutputStream::Stderr, "warn\0ing\n"),
            ],
        )
        .await
        .expect("append");
    // A repeated write (a retried batch) changes nothing.
    store
        .append_output(ids[0], &[chunk(2, OutputStream::Stderr, "other")])
        .await
        .expect("append");
    store
        .append_output(ids[0], &[chunk(1_000_001, OutputStream::Stdout, "again\n")])
        .await
        .expect("append");
    let all = store.output_after(ids[0], 0, 10).await.expect("read");
    let seqs: Vec<u32> = all.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 2, 1_000_001]);
    assert_eq!(all[1].stream, OutputStream::Stderr);
    assert!(all[1].text.starts_with("warn"), "{:?}", all[1].text);
    assert_eq!(
        store.output_after(ids[0], 1, 1).await.expect("read").len(),
        1
    );
    assert!(store
        .output_after(ids[0], 1_000_001, 10)
        .await
        .expect("read")
        .is_empty());
}
