//! Column values both backends store the same way, turned back into the job model. Each
//! backend reads its own rows; this is only the part where their columns agree.

use std::time::Duration;

use serde_json::value::RawValue;

use super::{StoreError, TenantLoad};
use crate::job::{
    ErrorKind, Failure, JobStatus, Output, OutputChunk, OutputStream, SourcePosition, WebhookState,
};
use crate::tenant::Tenant;

pub(super) fn status(text: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(text).ok_or_else(|| StoreError::Corrupt(format!("status {text:?}")))
}

pub(super) fn result(text: Option<String>) -> Result<Option<Box<RawValue>>, StoreError> {
    text.map(RawValue::from_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("result: {e}")))
}

/// The failure columns; `None` when the job has no `error_kind`.
pub(super) fn failure(
    kind: Option<String>,
    message: Option<String>,
    line: Option<i64>,
    column: Option<i64>,
) -> Result<Option<Failure>, StoreError> {
    let Some(kind) = kind else {
        return Ok(None);
    };
    let to_u32 = |v: i64| u32::try_from(v).unwrap_or(0);
    Ok(Some(Failure {
        kind: ErrorKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("error_kind {kind:?}")))?,
        message: message.unwrap_or_default(),
        position: match (line, column) {
            (Some(line), Some(column)) => Some(SourcePosition {
                line: to_u32(line),
                column: to_u32(column),
            }),
            _ => None,
        },
    }))
}

pub(super) fn output(text: Option<String>, truncated: Option<bool>) -> Option<Output> {
    text.map(|text| Output {
        text,
        truncated: truncated.unwrap_or(false),
    })
}

pub(super) fn timeout(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

pub(super) fn unsigned(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

pub(super) fn signed(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `(status, count)` rows.
pub(super) fn status_counts(rows: Vec<(String, i64)>) -> Result<Vec<(JobStatus, u64)>, StoreError> {
    rows.into_iter()
        .map(|(text, count)| Ok((status(&text)?, u64::try_from(count).unwrap_or(0))))
        .collect()
}

/// `(owner, queued, running)` rows, one per tenant, as the `limit` busiest tenants (queued
/// plus running, then by id) and one sum of the rest.
pub(super) fn busiest(rows: Vec<(String, i64, i64)>, limit: u32) -> Vec<TenantLoad> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut loads: Vec<TenantLoad> = rows
        .into_iter()
        .map(|(owner, queued, running)| TenantLoad {
            tenant: Some(Tenant::from_stored(&owner)),
            queued: count(queued),
            running: count(running),
        })
        .collect();
    loads.sort_by(|a, b| {
        (b.queued + b.running)
            .cmp(&(a.queued + a.running))
            .then_with(|| {
                a.tenant
                    .map(|t| t.as_stored())
                    .cmp(&b.tenant.map(|t| t.as_stored()))
            })
    });
    let rest = loads.split_off(loads.len().min(limit as usize));
    loads.push(TenantLoad {
        tenant: None,
        queued: rest.iter().map(|l| l.queued).sum(),
        running: rest.iter().map(|l| l.running).sum(),
    });
    loads
}

/// A `(seq, stream, text)` row of `job_output`.
pub(super) fn output_chunk(row: (i64, String, String)) -> Result<OutputChunk, StoreError> {
    let (seq, stream, text) = row;
    Ok(OutputChunk {
        seq: u32::try_from(seq).map_err(|_| StoreError::Corrupt(format!("output seq {seq}")))?,
        stream: OutputStream::parse(&stream)
            .ok_or_else(|| StoreError::Corrupt(format!("output stream {stream:?}")))?,
        text,
    })
}

/// `webhook_state` of a job that has a webhook.
pub(super) fn webhook_state(text: Option<&str>) -> Result<WebhookState, StoreError> {
    text.and_then(WebhookState::parse)
        .ok_or_else(|| StoreError::Corrupt(format!("webhook_state {text:?}")))
}
