//! Rows into a PostgreSQL table, exactly once with two-phase commit.
//!
//! Each event's JSON value becomes one row: `columns` maps each column to a field of
//! the value (a dotted path), or to `$key`, `$timestamp` or `$value`. Rows are written
//! in multi-row `INSERT`s of up to `batch_rows`; with `primary_key` set they are
//! upserts (`ON CONFLICT (key) DO UPDATE`), the last row of a key in a batch winning
//! as if the rows had been written one by one.
//!
//! Delivery, as Flink's `JdbcSink.exactlyOnceSink` (XA) and `JdbcSink.sink`:
//! - `exactly-once` (the default with checkpoints): rows since the last checkpoint go
//!   into one open transaction; at the barrier it is `PREPARE TRANSACTION`d under a
//!   name of the job, sink and checkpoint (`weir:<job>:<uid>:<checkpoint>`), and when
//!   the checkpoint completes it is `COMMIT PREPARED`. A restore commits the prepared
//!   transactions its checkpoint lists and rolls back this sink's others (those of
//!   checkpoints that never completed). The server needs `max_prepared_transactions`
//!   above 0.
//! - `at-least-once`: the open transaction is committed at the barrier; after a
//!   restore the rows since the checkpoint are written again. With `primary_key` the
//!   repeats overwrite the same rows, so the table ends as exactly once (idempotent
//!   upserts), though a reader may see older values for a while.
//! - Without checkpoints every batch commits on its own.
//!
//! Nothing is ever deleted, truncated or created: the table is the user's.
//!
//! A lost connection (the server restarted) is retried with back-off for
//! `reconnect_timeout_ms`; rows of the open transaction are kept until it is prepared
//! or committed, and written again on the new connection. A row the server rejects
//! (a value that does not fit its column, a constraint) is found by writing the batch
//! again row by row under savepoints, and named in the error with its column.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(feature = "postgres")]
mod writer;
#[cfg(feature = "postgres")]
pub use writer::PostgresSink;

/// Why a host built without the `postgres` feature has no PostgreSQL sink.
pub const POSTGRES_ABSENT: &str = "this weir was built without the PostgreSQL sink (the `postgres` feature, left \
     out of the quick start's build): build it with `cargo build -p weir-host` (default features)";

/// A `[[sink]]` with `type = "postgres"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkSpec {
    pub uid: String,
    /// A libpq connection string (`host=127.0.0.1 port=5432 user=app dbname=shop`) or
    /// URL (`postgresql://app@127.0.0.1:5432/shop`), without a password.
    pub connection: String,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (its first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The table, `name` or `schema.name`.
    pub table: String,
    /// Column name to what fills it: a field of the event's JSON value (`amount`,
    /// `customer.name`), or `$key`, `$timestamp` (the event time) or `$value` (the
    /// whole value).
    pub columns: BTreeMap<String, String>,
    /// Upsert on these columns (a primary key or unique constraint of the table):
    /// `INSERT ... ON CONFLICT (key) DO UPDATE SET` the other columns.
    #[serde(default)]
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub delivery: PostgresDelivery,
    /// The most rows one `INSERT` writes.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// How long the sink keeps trying to reach the server before the job fails.
    #[serde(default = "default_reconnect_timeout_ms")]
    pub reconnect_timeout_ms: u64,
}

/// The Postgres sink's guarantee with checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresDelivery {
    /// Two-phase commit per checkpoint.
    #[default]
    ExactlyOnce,
    /// A commit per checkpoint; rows since the checkpoint written again after a restore.
    AtLeastOnce,
}

fn default_batch_rows() -> usize {
    500
}

fn default_reconnect_timeout_ms() -> u64 {
    60_000
}

impl PostgresSinkSpec {
    /// Checks what can be checked without a server.
    pub fn validate(&self) -> Result<(), String> {
        let what = format!("sink `{}`", self.uid);
        if self.columns.is_empty() {
            return Err(format!("{what}: `columns` maps no column"));
        }
        if self.batch_rows == 0 {
            return Err(format!("{what}: `batch_rows` must be positive"));
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(format!("{what}: set `password_env` or `password_file`, not both"));
        }
        if let Some(key) = self.primary_key.iter().find(|k| !self.columns.contains_key(*k)) {
            return Err(format!("{what}: primary_key column `{key}` is not in `columns`"));
        }
        if carries_password(&self.connection) {
            return Err(format!(
                "{what}: `connection` carries a password; a job file must not. Give it in \
                 `password_env` (an environment variable) or `password_file`"
            ));
        }
        Ok(())
    }
}


/// Whether a libpq connection string (`key=value ...`) or URL (`postgresql://user:pw@host/db`,
/// `?password=`) holds a password.
fn carries_password(connection: &str) -> bool {
    let text = connection.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return url::Url::parse(text)
            .map(|url| url.password().is_some() || url.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")))
            .unwrap_or(true);
    }
    // `password=x`, `password = x`: a key, optional spaces, then `=`.
    let lower = text.to_ascii_lowercase();
    lower.match_indices("password").any(|(at, _)| {
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        before_ok && lower[at + "password".len()..].trim_start().starts_with('=')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_the_connection_are_refused() {
        let spec = |connection: &str| PostgresSinkSpec {
            uid: "pg".into(),
            connection: connection.into(),
            password_env: None,
            password_file: None,
            table: "t".into(),
            columns: [("id".to_string(), "id".to_string())].into(),
            primary_key: vec![],
            delivery: PostgresDelivery::ExactlyOnce,
            batch_rows: 10,
            reconnect_timeout_ms: 10,
        };
        assert!(spec("host=127.0.0.1 user=app").validate().is_ok());
        assert!(spec("postgresql://app@127.0.0.1/shop").validate().is_ok());
        let refused = spec("postgresql://app:secret@127.0.0.1/shop").validate().unwrap_err();
        assert!(refused.contains("carries a password") && !refused.contains("secret"), "{refused}");
        for connection in ["host=h password=secret", "host=h  PASSWORD = secret", "postgresql://h/db?password=x"] {
            let refused = spec(connection).validate().unwrap_err();
            assert!(refused.contains("password_env"), "{connection}: {refused}");
        }
        assert!(spec("host=h user=password_admin").validate().is_ok(), "a user named so is not a password");
        let mut keyed = spec("host=h");
        keyed.primary_key = vec!["nope".into()];
        assert!(keyed.validate().unwrap_err().contains("`nope` is not in `columns`"));
    }
}
