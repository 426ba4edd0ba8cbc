//! Webhooks: once a job whose request named one is terminal, an API process POSTs the job to
//! it, signed per the Standard Webhooks convention. The jobs table is the outbox, so pending
//! deliveries survive restarts; any API process may send them (each locks what it sends), and
//! failures are retried with backoff until `WEBHOOK_RETRY_SECS` after the job ended: at least
//! once, with an id that lets receivers drop repeats. Targets are checked by the address they
//! resolve to, at submission and again at each delivery, and the delivery connects to the
//! address it checked; redirects are not followed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;
use shared::job::Job;
use shared::store::{JobStore, StoreEvents};

use crate::error::ApiError;
use crate::view::JobView;

/// Longest webhook URL accepted.
const MAX_URL_BYTES: usize = 2048;

/// How long resolving a webhook's host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a process holds the deliveries it claimed before others may take them over.
const LOCK_FOR: Duration = Duration::from_secs(120);

/// Deliveries claimed at once.
const BATCH: u32 = 16;

/// How often the outbox is looked at without a wake-up.
const POLL: Duration = Duration::from_secs(1);

/// Longest wait between two tries of one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Webhook settings.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookConfig {
    /// Key that signs webhooks (`webhook-signature`, HMAC-SHA256): `whsec_` and base64, as
    /// Standard Webhooks libraries take it, or any other text used as it is. Without it,
    /// requests that name a webhook are refused.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<WebhookSecret>,

    /// Allow webhooks to loopback, private, link-local and metadata addresses.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// Host names (comma-separated) whose webhooks may go to private addresses, for
    /// receivers inside the deployment.
    #[arg(long, env = "WEBHOOK_PRIVATE_HOSTS", value_delimiter = ',')]
    pub webhook_private_hosts: Vec<String>,

    /// How long after a job ends its webhook is retried, in seconds.
    #[arg(long, env = "WEBHOOK_RETRY_SECS", default_value_t = 86_400)]
    pub webhook_retry_secs: u64,

    /// How long one delivery may take, in seconds.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
}

/// The signing key; never printed.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl FromStr for WebhookSecret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err("WEBHOOK_SECRET is empty".to_owned());
        }
        match text.strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Self)
                .map_err(|e| format!("WEBHOOK_SECRET after `whsec_` is not base64: {e}")),
            None => Ok(Self(text.as_bytes().to_vec())),
        }
    }
}

impl WebhookSecret {
    /// `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, the Standard Webhooks signature.
    #[must_use]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

/// Why an address may not receive webhooks, or `None` when it may.
#[must_use]
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => forbidden_v4(mapped),
            None => forbidden_v6(ip),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local or metadata address")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("a private address")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
        Some("not a unicast address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private address")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a unicast address")
    } else {
        None
    }
}

/// A webhook target that passed the checks, with the address to connect to.
struct Target {
    url: Url,
    host: String,
    address: SocketAddr,
}

/// Checks a webhook URL as a request gives it.
///
/// # Errors
/// A 400 naming the `webhook` field: no secret configured, a malformed URL, a host that does
/// not resolve, or one that resolves to an address webhooks may not go to.
pub async fn check(config: &WebhookConfig, url: &str) -> Result<(), ApiError> {
    if config.webhook_secret.is_none() {
        return Err(invalid(
            "this server sends no webhooks: it has no WEBHOOK_SECRET to sign them with",
        ));
    }
    resolve(config, url).await.map(drop).map_err(invalid)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: "webhook",
        message: message.into(),
    }
}

async fn resolve(config: &WebhookConfig, url: &str) -> Result<Target, String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!(
            "`webhook.url` is longer than {MAX_URL_BYTES} bytes"
        ));
    }
    let parsed = Url::parse(url).map_err(|e| format!("`webhook.url` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("`webhook.url` must be an http:// or https:// URL".to_owned());
    }
    let host = parsed
        .host_str()
        .ok_or("`webhook.url` has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or("`webhook.url` has no port")?;
    let addresses: Vec<SocketAddr> = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| format!("resolving {host} took too long"))?
    .map_err(|e| format!("{host} does not resolve: {e}"))?
    .collect();
    let private_allowed = config.webhook_allow_private
        || config
            .webhook_private_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&host));
    // Every address must pass: the name is resolved again at each delivery, and a name with
    // one public and one private address could reach either.
    if !private_allowed {
        if let Some((address, why)) = addresses
            .iter()
            .find_map(|a| forbidden(a.ip()).map(|why| (a, why)))
        {
            return Err(format!(
                "`webhook.url` resolves to {}, {why}; webhooks go to public addresses only \
                 (WEBHOOK_ALLOW_PRIVATE, WEBHOOK_PRIVATE_HOSTS)",
                address.ip()
            ));
        }
    }
    let address = *addresses
        .first()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    Ok(Target {
        url: parsed,
        host,
        address,
    })
}

/// Sends due webhooks until the task is dropped.
pub async fn run(store: Arc<dyn JobStore>, config: WebhookConfig) {
    let Some(secret) = config.webhook_secret.clone() else {
        return;
    };
    install_tls_provider();
    let events: Option<StoreEvents> = store.events();
    let mut finished = events.as_ref().map(|e| e.finished.subscribe());
    let mut changed = events.as_ref().map(|e| e.changed.subscribe());
    loop {
        match store.claim_webhooks(LOCK_FOR, BATCH).await {
            Ok(jobs) if !jobs.is_empty() => {
                let sends = jobs
                    .iter()
                    .map(|job| deliver(&*store, &config, &secret, job));
                futures::future::join_all(sends).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read due webhooks"),
        }
        let finished = async {
            match finished.as_mut() {
                Some(finished) => {
                    let _ = finished.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let changed = async {
            match changed.as_mut() {
                Some(changed) => {
                    if changed.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = finished => {}
            () = changed => {}
        }
    }
}

/// TLS by rustls on ring, which builds with the C compiler alone (aws-lc, rustls's default,
/// needs more tools). rustls marks ring's provider deprecated for lacking post-quantum key
/// exchange, which webhook deliveries (signed, public payloads) can do without. Another part
/// of the process may have installed a provider already.
#[allow(deprecated)]
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn deliver(store: &dyn JobStore, config: &WebhookConfig, secret: &WebhookSecret, job: &Job) {
    let Some(webhook) = &job.webhook else {
        return;
    };
    let outcome = send(config, secret, job, &webhook.url).await;
    let recorded = match &outcome {
        Ok(()) => {
            tracing::info!(job_id = %job.id, attempt = webhook.attempts, "webhook delivered");
            store.webhook_delivered(job.id).await
        }
        Err(error) => {
            let retry_at = retry_at(job, webhook.attempts, config);
            tracing::warn!(job_id = %job.id, attempt = webhook.attempts, %error, given_up = retry_at.is_none(), "webhook not delivered");
            store.webhook_failed(job.id, error, retry_at).await
        }
    };
    if let Err(e) = recorded {
        // The lock runs out and the delivery is tried again: at least once.
        tracing::warn!(job_id = %job.id, error = %e, "could not record a webhook delivery");
    }
}

/// When to try again after `attempts` tries: doubling from a second, up to ten minutes, or
/// `None` once that would be past the retry period.
fn retry_at(job: &Job, attempts: u32, config: &WebhookConfig) -> Option<chrono::DateTime<Utc>> {
    let backoff = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF);
    let at = Utc::now() + chrono::Duration::from_std(backoff).ok()?;
    let ended = job.finished_at.unwrap_or(job.created_at);
    let deadline =
        ended + chrono::Duration::from_std(Duration::from_secs(config.webhook_retry_secs)).ok()?;
    (at <= deadline).then_some(at)
}

async fn send(
    config: &WebhookConfig,
    secret: &WebhookSecret,
    job: &Job,
    url: &str,
) -> Result<(), String> {
    let target = resolve(config, url).await?;
    let body = serde_json::to_vec(&JobView::new(job)).map_err(|e| e.to_string())?;
    let id = format!("msg_{}", job.id.0.simple());
    let timestamp = Utc::now().timestamp();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(config.webhook_timeout_secs.max(1)))
        // Connect to the address that was checked, whatever the name resolves to by now.
        .resolve(&target.host, target.address)
        .user_agent(concat!("runbox-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let response = client
        .post(target.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", secret.sign(&id, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!(
            "the receiver answered {status}, a redirect, which is not followed"
        ))
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            .parse()
            .expect("secret");
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(forbidden(ip.parse().expect(ip)).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert_eq!(forbidden(ip.parse().expect(ip)), None, "{ip}");
        }
    }

    #[test]
    fn the_secret_is_never_printed() {
        let secret: WebhookSecret = "hunter2".parse().expect("secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
