//! End-to-end tests: the real `api` and `worker` binaries against a temporary SQLite file and
//! real nsjail sandboxes.

mod app;
mod chaos;
mod escape;
mod execute;
mod jobs;
mod readme;
mod reliability;
mod scale;
mod validate;
