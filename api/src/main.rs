//! `api` binary: parse config, open (and migrate) the store, serve HTTP until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use shared::store::{self, Schema};
use tokio::net::TcpListener;

use api::config::ApiConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    shared::telemetry::init(config.log.log_format);

    let store = store::connect(
        &config.store.database_url,
        Schema::Migrate,
        &config.store.options(false, true),
    )
    .await
    .context("opening the job store")?;
    let address = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, store = ?config.store, "api listening");
    api::serve(listener, api::app(&config, store), shutdown_signal()).await?;
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
