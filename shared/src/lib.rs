//! Pieces the `api` and `worker` binaries share: the job model, the job store, config and
//! telemetry.

pub mod config;
pub mod job;
pub mod store;
pub mod telemetry;
