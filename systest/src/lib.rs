//! Nothing but tests: `tests/system` starts the workspace's `api` and `worker` binaries (build
//! them first: `cargo build --workspace --bins`) and talks to them over HTTP, as users do.
