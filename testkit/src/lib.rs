//! What the test suites share: throwaway Postgres databases, and settings parsed from
//! arguments alone, so no test depends on the environment variables of whoever runs it.

use clap::{CommandFactory, FromArgMatches};

/// The server test databases are made on: `TEST_POSTGRES_URL`, or the local one.
#[must_use]
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The URL of database `name` on the admin server.
#[must_use]
pub fn postgres_database_url(name: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

async fn admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("Postgres must be reachable for these tests (set TEST_POSTGRES_URL)")
}

/// An empty database of its own on the test server, dropped (with its sessions) when this
/// is dropped, also after a failed test.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// Creates `<prefix>_<random>`.
    ///
    /// # Panics
    /// When the server is unreachable or refuses.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let statement = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin().await)
            .await
            .expect("create test database");
        Self { name }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn url(&self) -> String {
        postgres_database_url(&self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // Drop may run inside a runtime that cannot block; a small runtime on its own thread
        // always can. FORCE ends sessions that killed processes left behind.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut admin().await)
                    .await;
            });
        })
        .join();
    }
}

/// Parses settings of type `C` from `args` (the program name first) and their defaults only:
/// every `env = ...` of the settings is ignored, so what the caller exported cannot change a
/// test.
///
/// # Panics
/// When `args` are not valid settings.
#[must_use]
pub fn settings_without_env<C: CommandFactory + FromArgMatches>(args: &[&str]) -> C {
    let command = C::command().mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(args)
        .unwrap_or_else(|e| panic!("invalid test settings {args:?}: {e}"));
    C::from_arg_matches(&matches).unwrap_or_else(|e| panic!("invalid test settings: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Settings {
        #[arg(long, env = "TESTKIT_PROBE_PORT", default_value_t = 8080)]
        port: u16,
    }

    #[test]
    fn settings_ignore_the_environment() {
        // Only this test reads the variable, and it sets it before any thread of its own.
        std::env::set_var("TESTKIT_PROBE_PORT", "1");
        let settings: Settings = settings_without_env(&["probe"]);
        assert_eq!(settings.port, 8080);
        let settings: Settings = settings_without_env(&["probe", "--port", "9"]);
        assert_eq!(settings.port, 9);
    }

    #[test]
    fn database_urls_replace_the_admin_database() {
        assert!(postgres_database_url("x").ends_with("/x"));
        assert!(!postgres_database_url("x").ends_with("/postgres/x"));
    }
}
