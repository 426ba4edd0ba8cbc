//! API keys: what a key looks like, how a request proves it holds one, and who the caller
//! then is. Only a SHA-256 hash of each secret is stored; secrets are long random tokens, so
//! a fast hash is enough (there is no password to guess).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};
use shared::store::{JobStore, StoreError};
use shared::tenant::{ApiKey, HashedKey, Tenant};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Every secret starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const SECRET_PREFIX: &str = "rbx_";

/// Random bytes in a secret: 256 bits, 43 base64url characters after the prefix.
const SECRET_BYTES: usize = 32;

/// Characters of the secret kept, in the clear, to tell keys apart in `api keys list`.
const DISPLAY_PREFIX_LEN: usize = SECRET_PREFIX.len() + 8;

/// Whether requests must carry a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every job route needs `Authorization: Bearer <key>`.
    Required,
    /// No checks: whoever reaches the port may use every route and see every job.
    Off,
}

impl AuthMode {
    /// `off` only when the API listens on loopback alone (a developer's machine); any other
    /// bind fails closed.
    #[must_use]
    pub fn default_for(host: &str) -> Self {
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            Self::Off
        } else {
            Self::Required
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Off => "off",
        }
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsAuth {
    /// Anyone who reaches the port (scrapers on a private network).
    Open,
    /// Only holders of an admin key, whatever `AUTH` says (the per-tenant series name keys).
    Admin,
}

/// A freshly made key's secret, shown once and never stored.
pub struct Secret(String);

impl Secret {
    /// A new random secret.
    ///
    /// # Errors
    /// When the operating system's random source fails.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps of it.
    #[must_use]
    pub fn hash(&self) -> String {
        hash(&self.0)
    }

    /// The characters `api keys list` shows.
    #[must_use]
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(DISPLAY_PREFIX_LEN).collect()
    }
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off: no tenant, and every job is visible.
    Anyone,
    /// The holder of this key.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// The tenant new jobs of this caller belong to.
    #[must_use]
    pub fn tenant(&self) -> Tenant {
        match self {
            Self::Anyone => Tenant::NONE,
            Self::Key(key) => Tenant::key(key.id),
        }
    }

    /// Whose jobs this caller may see: `None` for all.
    #[must_use]
    pub fn visible_tenant(&self) -> Option<Tenant> {
        match self {
            Self::Anyone => None,
            Self::Key(key) if key.admin => None,
            Self::Key(key) => Some(Tenant::key(key.id)),
        }
    }

    /// Whether a job of `tenant` exists for this caller (another tenant's job does not).
    #[must_use]
    pub fn sees(&self, tenant: Tenant) -> bool {
        self.visible_tenant().is_none_or(|own| own == tenant)
    }
}

/// Why a request was refused before its handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <key>`.
    Malformed,
    /// A well-formed key that names no unrevoked key.
    Invalid,
}

/// How long a looked-up key (or its absence) is trusted before the store is asked again:
/// under a second, so a revocation reaches every API process within one.
const CACHE_FOR: Duration = Duration::from_millis(500);

/// Cached lookups kept at most; past it the cache starts over (a flood of made-up keys
/// cannot grow it without bound).
const CACHE_CAPACITY: usize = 10_000;

/// Checks keys against the store, with a short-lived cache so a busy client costs one
/// lookup per half second, not one per request.
pub struct Authenticator {
    mode: AuthMode,
    /// Path templates of the routes that need a key.
    keyed: HashSet<String>,
    /// Path templates of the routes that need an admin key, whatever `mode` says.
    admin_only: HashSet<String>,
    store: Arc<dyn JobStore>,
    cache: Mutex<KeyCache>,
}

/// Hash of a presented secret → when it was looked up, and what was found.
type KeyCache = HashMap<String, (Instant, Option<Arc<HashedKey>>)>;

impl Authenticator {
    #[must_use]
    pub fn new(
        mode: AuthMode,
        keyed: HashSet<String>,
        admin_only: HashSet<String>,
        store: Arc<dyn JobStore>,
    ) -> Self {
        Self {
            mode,
            keyed,
            admin_only,
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    #[must_use]
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Who sent a request with this `Authorization` header value.
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] when keys are required and the header does not carry
    /// a valid one; [`ApiError::StoreUnavailable`] when the key cannot be looked up.
    pub async fn caller(&self, authorization: Option<&[u8]>) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::Off {
            return Ok(Caller::Anyone);
        }
        self.key(authorization).await.map(Caller::Key)
    }

    /// The unrevoked key an `Authorization` header carries.
    async fn key(&self, authorization: Option<&[u8]>) -> Result<Arc<ApiKey>, ApiError> {
        let header = authorization.ok_or(ApiError::Unauthenticated(Unauthenticated::Missing))?;
        let secret =
            bearer_token(header).ok_or(ApiError::Unauthenticated(Unauthenticated::Malformed))?;
        let presented = hash(secret);
        match self.lookup(&presented).await? {
            // The index lookup found the row; the decision itself compares in constant time.
            Some(stored) if bool::from(stored.hash.as_bytes().ct_eq(presented.as_bytes())) => {
                Ok(Arc::new(stored.key.clone()))
            }
            _ => Err(ApiError::Unauthenticated(Unauthenticated::Invalid)),
        }
    }

    async fn lookup(&self, hash: &str) -> Result<Option<Arc<HashedKey>>, StoreError> {
        let now = Instant::now();
        if let Some((at, key)) = self.cache().get(hash) {
            if now.duration_since(*at) < CACHE_FOR {
                return Ok(key.clone());
            }
        }
        let key = self.store.active_key_by_hash(hash).await?.map(Arc::new);
        let mut cache = self.cache();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(hash.to_owned(), (now, key.clone()));
        Ok(key)
    }

    fn cache(&self) -> MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The key of an `Authorization: Bearer <key>` header; the scheme is case-insensitive
/// (RFC 7235). A key is visible ASCII, so anything else is malformed.
fn bearer_token(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_graphic()))
    .then_some(token)
}

/// Middleware on every matched route: on the keyed ones, refuses requests without a valid key
/// (when keys are required) and hands the handlers the [`Caller`].
pub async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    let counted = |e: ApiError| {
        if let ApiError::Unauthenticated(reason) = &e {
            crate::metrics::request_rejected(reason.as_str());
        }
        e
    };
    if authenticator.admin_only.contains(&path) {
        let key = authenticator.key(authorization).await.map_err(counted)?;
        if !key.admin {
            crate::metrics::request_rejected("not_admin");
            return Err(ApiError::AdminOnly);
        }
    } else if authenticator.keyed.contains(&path) {
        let caller = authenticator.caller(authorization).await.map_err(counted)?;
        request.extensions_mut().insert(caller);
    }
    Ok(next.run(request).await)
}

impl Unauthenticated {
    /// The `reason` label of the rejection metric.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing_key",
            Self::Malformed => "malformed_key",
            Self::Invalid => "invalid_key",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_recognisable() {
        let a = Secret::generate().expect("random");
        let b = Secret::generate().expect("random");
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(a.expose().len(), SECRET_PREFIX.len() + 43);
        assert!(a.expose().starts_with(&a.display_prefix()));
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn only_a_bearer_header_with_a_visible_token_carries_a_key() {
        assert_eq!(bearer_token(b"Bearer rbx_abc"), Some("rbx_abc"));
        assert_eq!(bearer_token(b"bearer rbx_abc"), Some("rbx_abc"));
        for bad in [
            &b"rbx_abc"[..],
            b"Basic dXNlcjpwYXNz",
            b"Bearer",
            b"Bearer ",
            b"Bearer rbx abc",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_off_by_default_only_on_loopback() {
        for host in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            assert_eq!(AuthMode::default_for(host), AuthMode::Off, "{host}");
        }
        for host in ["0.0.0.0", "::", "192.168.1.10", "api.example.com"] {
            assert_eq!(AuthMode::default_for(host), AuthMode::Required, "{host}");
        }
    }
}
