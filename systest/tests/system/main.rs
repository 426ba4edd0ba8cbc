//! End-to-end tests: the real `api` and `worker` binaries against a temporary SQLite file and
//! real nsjail sandboxes.

mod app;
mod args;
mod chaos;
mod deployment;
mod escape;
mod events;
mod execute;
mod jobs;
mod keys;
mod listing;
mod metrics;
mod openapi;
mod readme;
mod reliability;
mod request_ids;
mod scale;
mod validate;
mod warm;
mod webhooks;
