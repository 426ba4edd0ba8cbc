//! Benchmark mode only: an executor that marks every job succeeded (result `null`) without
//! running its script, so the queue itself can be measured.

use async_trait::async_trait;
use serde_json::value::RawValue;
use shared::job::{ClaimedJob, Outcome, Output, Usage};

use crate::sandbox::{Executor, OutputTap};

/// Completes jobs without running them. Never use outside benchmarks.
#[derive(Debug, Default)]
pub struct NoopExecutor;

#[async_trait]
impl Executor for NoopExecutor {
    async fn execute(&self, _job: &ClaimedJob, _slot: usize, _tap: &OutputTap) -> Outcome {
        Outcome {
            result: RawValue::from_string("null".to_owned()).map_err(|e| shared::job::Failure {
                kind: shared::job::ErrorKind::SandboxError,
                message: e.to_string(),
                position: None,
            }),
            stdout: Output::default(),
            stderr: Output::default(),
            usage: Usage::default(),
        }
    }
}
