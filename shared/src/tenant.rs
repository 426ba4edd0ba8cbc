//! Tenants: each API key is one, owning the jobs it submits and held to its own quotas.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Identifier of an API key, a random UUID chosen at creation; shown by `api keys list` and
/// named by `api keys revoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub Uuid);

impl KeyId {
    /// A fresh random id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for KeyId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for KeyId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Whose a job is: the key that created it, or nobody's when authentication is off. Stored
/// as the key's id, or as the empty string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tenant(Option<KeyId>);

impl Tenant {
    /// Jobs created with authentication off.
    pub const NONE: Self = Self(None);

    #[must_use]
    pub fn key(id: KeyId) -> Self {
        Self(Some(id))
    }

    /// The key, if the tenant has one.
    #[must_use]
    pub fn key_id(&self) -> Option<KeyId> {
        self.0
    }

    /// The stored spelling: the key's id, or `""`.
    #[must_use]
    pub fn as_stored(&self) -> String {
        self.0.map(|id| id.to_string()).unwrap_or_default()
    }

    /// Reads the stored spelling back; anything that is not a key id is no tenant.
    #[must_use]
    pub fn from_stored(stored: &str) -> Self {
        Self(stored.parse().ok())
    }
}

/// Per-key overrides of the server's default quotas; `None` keeps the default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QuotaOverrides {
    /// Jobs of this key running at once.
    pub max_running: Option<u32>,
    /// Jobs of this key waiting in the queue.
    pub max_queued: Option<u32>,
    /// Submissions per minute (a token bucket holding at most this many).
    pub submissions_per_minute: Option<u32>,
    /// Largest `timeout` a job of this key may ask for.
    pub max_timeout: Option<Duration>,
    /// Largest `memory_mb` a job of this key may ask for.
    pub max_memory_mb: Option<u32>,
}

/// An API key as stored: never its secret, only a hash of it and a short prefix for people.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: KeyId,
    /// Who or what the key is for, chosen at creation.
    pub name: String,
    /// The secret's first characters, enough to tell keys apart in a list.
    pub prefix: String,
    /// Admin keys see and cancel every tenant's jobs.
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub quotas: QuotaOverrides,
}

/// A key with the hash of its secret: what is stored, and what a lookup finds.
#[derive(Debug, Clone, PartialEq)]
pub struct HashedKey {
    pub key: ApiKey,
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    pub hash: String,
}

/// What revoking a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The key stops working.
    Done,
    /// The key had already been revoked.
    Already,
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_round_trips_through_its_stored_spelling() {
        let key = Tenant::key(KeyId::new());
        assert_eq!(Tenant::from_stored(&key.as_stored()), key);
        assert_eq!(Tenant::NONE.as_stored(), "");
        assert_eq!(Tenant::from_stored(""), Tenant::NONE);
    }
}
