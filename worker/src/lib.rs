//! The worker: claims queued jobs and runs each one in its own nsjail sandbox.

pub mod config;
pub mod live_output;
pub mod metrics;
pub mod noop;
pub mod runner;
pub mod sandbox;
