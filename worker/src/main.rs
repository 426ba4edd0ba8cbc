//! `worker` binary: parse config, check the sandbox, then claim and run jobs until stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shared::config::StoreUser;
use shared::store::{self, JobStore, Schema, StoreError, StoreOptions};
use tokio_util::sync::CancellationToken;
use worker::config::{ExecutorKind, MetricsAddr, SandboxMode, WorkerConfig};
use worker::noop::NoopExecutor;
use worker::runner::{self, RunnerSettings};
use worker::sandbox::warm::WarmExecutor;
use worker::sandbox::{Executor, NsjailExecutor};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    shared::telemetry::init(&config.log);

    let readiness = worker::metrics::Readiness::default();
    // Bound before anything else so a configured port that is taken stops the worker at once.
    let metrics_addr = config.metrics_addr();
    let metrics_listener =
        worker::metrics::bind(metrics_addr)
            .await
            .with_context(|| match metrics_addr {
                MetricsAddr::Listen(address) => {
                    format!("binding the metrics listener on {address} (METRICS_ADDR)")
                }
                _ => "binding the metrics listener (METRICS_ADDR chooses its address)".to_owned(),
            })?;
    if let Some(listener) = metrics_listener {
        let handle = worker::metrics::install();
        match listener.local_addr() {
            Ok(address) => tracing::info!(%address, "metrics at /metrics, health at /health"),
            Err(_) => tracing::info!("metrics at /metrics, health at /health"),
        }
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if let Err(e) = worker::metrics::serve(listener, handle, readiness).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }

    let executor: Arc<dyn Executor> = match (config.executor, config.sandbox.mode) {
        (ExecutorKind::Nsjail, SandboxMode::Cold) => {
            let executor = NsjailExecutor::new(config.sandbox.clone()).context("sandbox setup")?;
            executor.self_test().await.context("sandbox check")?;
            Arc::new(executor)
        }
        (ExecutorKind::Nsjail, SandboxMode::Warm) => {
            let mut executor = WarmExecutor::start(config.sandbox.clone(), config.concurrency())
                .await
                .context("sandbox setup")?;
            executor.self_test().await.context("sandbox check")?;
            Arc::new(executor)
        }
        (ExecutorKind::Noop, _) => {
            tracing::warn!(
                "BENCHMARK MODE (WORKER_EXECUTOR=noop): jobs are marked succeeded without \
                 running their scripts"
            );
            Arc::new(NoopExecutor)
        }
    };
    let store = open_store(&config).await.context("opening the job store")?;
    readiness.set_ready();

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    runner::run(
        store,
        executor,
        RunnerSettings {
            worker_id: config.worker_id(),
            concurrency: config.concurrency(),
            poll_interval: config.poll_interval(),
            backstop_poll: config.store.backstop_poll(),
            lease: config.lease(),
            heartbeat: Duration::from_millis(config.heartbeat_ms.max(10)),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            max_attempts: config.max_attempts.max(1),
            sandbox_stop_grace: runner::SANDBOX_STOP_GRACE,
        },
        shutdown,
    )
    .await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Opens the store, waiting while the database is unreachable or not yet migrated (a worker
/// may start before its database, or before the API that migrates it); other errors, such as
/// a URL scheme that names no database, end the worker at once.
async fn open_store(config: &WorkerConfig) -> Result<Arc<dyn JobStore>, StoreError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match store::connect(
            &config.store.database_url,
            Schema::RequireCurrent,
            &StoreOptions {
                tenant_max_running: config.quota_max_running,
                ..config.store.options(StoreUser::Worker)
            },
        )
        .await
        {
            Err(e @ (StoreError::Database(_) | StoreError::Schema(_))) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "job store not available yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            opened => return opened,
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
