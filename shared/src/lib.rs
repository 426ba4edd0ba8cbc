//! Pieces the `api` and `worker` binaries share: the job and tenant models, the job store,
//! config, telemetry and the metrics recorder.

pub mod config;
pub mod job;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod tenant;
