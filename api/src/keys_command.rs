//! `api keys create|list|revoke`: managing API keys in the configured database, from the
//! same binary and settings as the server.

use std::io::Write;

use anyhow::{bail, Context};
use chrono::Utc;
use shared::store::JobStore;
use shared::tenant::{ApiKey, HashedKey, KeyId, QuotaOverrides, Revoked};

use crate::auth::Secret;

/// What the `api` binary does besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage API keys in the database DATABASE_URL names (migrating it first if needed).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key. Its secret is printed once, alone on standard output
    /// (`KEY=$(api keys create --name ci)`); only a hash of it is stored.
    Create {
        /// Who or what the key is for (shown by `api keys list`).
        #[arg(long)]
        name: String,
        /// An admin key sees and cancels every tenant's jobs.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        quotas: QuotaFlags,
    },
    /// List every key: id, prefix of the secret, admin, created, revoked, own quotas, name.
    List,
    /// Revoke a key by id; it stops working within a second on every API process.
    Revoke {
        /// The key's id, as `api keys list` shows it.
        id: String,
    },
}

/// A key's own quotas; each left out follows the server's default, and 0 means no limit.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct QuotaFlags {
    /// Jobs of this key running at once (the workers' QUOTA_MAX_RUNNING otherwise).
    #[arg(long)]
    max_running: Option<u32>,
    /// Jobs of this key waiting in the queue (QUOTA_MAX_QUEUED otherwise).
    #[arg(long)]
    max_queued: Option<u32>,
    /// Submissions a minute (QUOTA_SUBMISSIONS_PER_MINUTE otherwise).
    #[arg(long)]
    submissions_per_minute: Option<u32>,
    /// Largest `timeout` in seconds (QUOTA_MAX_TIMEOUT_SECS otherwise).
    #[arg(long)]
    max_timeout_secs: Option<f64>,
    /// Largest `memory_mb` (QUOTA_MAX_MEMORY_MB otherwise).
    #[arg(long)]
    max_memory_mb: Option<u32>,
}

impl QuotaFlags {
    fn overrides(self) -> anyhow::Result<QuotaOverrides> {
        let max_timeout = self
            .max_timeout_secs
            .map(|secs| {
                std::time::Duration::try_from_secs_f64(secs)
                    .map_err(|_| anyhow::anyhow!("--max-timeout-secs must be a number of seconds"))
            })
            .transpose()?;
        Ok(QuotaOverrides {
            max_running: self.max_running,
            max_queued: self.max_queued,
            submissions_per_minute: self.submissions_per_minute,
            max_timeout,
            max_memory_mb: self.max_memory_mb,
        })
    }
}

/// A key's own quotas as `api keys list` shows them; `-` when it has none.
fn describe(quotas: &QuotaOverrides) -> String {
    let mut parts = Vec::new();
    let mut count = |name: &str, value: Option<u32>| {
        if let Some(value) = value {
            parts.push(format!("{name}={value}"));
        }
    };
    count("max_running", quotas.max_running);
    count("max_queued", quotas.max_queued);
    count("submissions_per_minute", quotas.submissions_per_minute);
    count("max_memory_mb", quotas.max_memory_mb);
    if let Some(timeout) = quotas.max_timeout {
        parts.push(format!("max_timeout={}s", timeout.as_secs_f64()));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

/// Longest key name kept.
const MAX_NAME_CHARS: usize = 100;

/// Runs `command` against `store`, writing what it shows to `out` and its remarks to `err`.
///
/// # Errors
/// A refused argument, an unknown key, or a store failure.
pub async fn run(
    command: &KeysCommand,
    store: &dyn JobStore,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            admin,
            quotas,
        } => {
            let quotas = quotas.overrides()?;
            let name = name.trim();
            if name.is_empty()
                || name.chars().count() > MAX_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                bail!("--name must be 1 to {MAX_NAME_CHARS} printable characters");
            }
            let secret = Secret::generate().context("reading the system's random source")?;
            let key = ApiKey {
                id: KeyId::new(),
                name: name.to_owned(),
                prefix: secret.display_prefix(),
                admin: *admin,
                created_at: Utc::now(),
                revoked_at: None,
                quotas,
            };
            store
                .create_key(&HashedKey {
                    key: key.clone(),
                    hash: secret.hash(),
                })
                .await
                .context("storing the key")?;
            writeln!(
                err,
                "created {}key {} ({:?}); its secret follows, shown this once",
                if key.admin { "admin " } else { "" },
                key.id,
                key.name
            )?;
            writeln!(out, "{}", secret.expose())?;
        }
        KeysCommand::List => {
            let keys = store.list_keys().await.context("listing keys")?;
            writeln!(
                out,
                "{:<36}  {:<12}  {:<5}  {:<20}  {:<20}  {:<24}  NAME",
                "ID", "PREFIX", "ADMIN", "CREATED", "REVOKED", "QUOTAS"
            )?;
            for key in keys {
                let when = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
                writeln!(
                    out,
                    "{:<36}  {:<12}  {:<5}  {:<20}  {:<20}  {:<24}  {}",
                    key.id,
                    key.prefix,
                    if key.admin { "yes" } else { "no" },
                    when(key.created_at),
                    key.revoked_at.map_or_else(|| "-".to_owned(), when),
                    describe(&key.quotas),
                    key.name
                )?;
            }
        }
        KeysCommand::Revoke { id } => {
            let key_id: KeyId = id.parse().map_err(|_| {
                anyhow::anyhow!("{id:?} is not a key id (a UUID from `api keys list`)")
            })?;
            match store.revoke_key(key_id).await.context("revoking the key")? {
                Revoked::Done => writeln!(err, "revoked key {key_id}")?,
                Revoked::Already => writeln!(err, "key {key_id} was already revoked")?,
                Revoked::NotFound => bail!("no key with id {key_id}"),
            }
        }
    }
    Ok(())
}
