//! `api` binary: parse config, open (and migrate) the store, serve HTTP until SIGTERM/SIGINT.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shared::config::StoreUser;
use shared::store::{self, Schema};
use tokio::net::TcpListener;

use api::auth::AuthMode;
use api::config::ApiConfig;
use api::keys_command::{self, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    shared::telemetry::init(&config.log);

    let store = store::connect(
        &config.store.database_url,
        Schema::Migrate,
        &config.store.options(StoreUser::Api),
    )
    .await
    .context("opening the job store")?;
    if let Some(Command::Keys(command)) = &config.command {
        return keys_command::run(
            command,
            store.as_ref(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )
        .await;
    }
    let auth = config.auth_mode();
    if auth == AuthMode::Required && !store.has_active_key().await.context("reading API keys")? {
        anyhow::bail!(
            "AUTH=required (the default when HOST is not a loopback address), but the database \
             holds no API key: create one with `api keys create --name admin --admin` against \
             the same DATABASE_URL and start the API again (or set AUTH=off to run without keys)"
        );
    }
    let address = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, store = ?config.store, auth = auth.as_str(), "api listening");

    // The signal starts a graceful shutdown (no new connections, in-flight requests finish);
    // after the grace period whatever is still in flight is dropped. Jobs are not affected:
    // they live in the store and run on workers.
    let app = api::app(&config, store);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    };
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = api::serve(listener, app, shutdown) => served?,
        () = deadline => tracing::warn!(?grace, "grace period over; dropping requests still in flight"),
    }
    tracing::info!("api stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}
