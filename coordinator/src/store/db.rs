//! The SQLite connection: WAL mode, migrated on open, used from async code only
//! through `spawn_blocking` so a query never stalls the runtime.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::schema;
use crate::error::{CoordinatorError, Result};

/// A shared handle to the job database.
#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Db {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        // WAL keeps readers (status queries) off the writer's back, and with
        // synchronous=FULL a committed transaction survives power loss.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CoordinatorError::Config(format!(
                "{} cannot use write-ahead logging (journal mode {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| CoordinatorError::task_failed("database", e))?
    }

    /// Runs `f` with the connection on the current thread (startup and tests).
    pub fn call_blocking<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R>) -> Result<R> {
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_in_wal_mode_at_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let db = Db::open(&path).unwrap();
        let (mode, version): (String, u32) = db
            .call(|c| {
                let mode = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                let version = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
                Ok((mode, version))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version, schema::SCHEMA_VERSION);
        drop(db);
        // Reopening an existing database migrates nothing and keeps its data.
        let db = Db::open(&path).unwrap();
        db.call_blocking(|c| {
            c.execute(
                "INSERT INTO events (job_id, at_ms, kind, message) VALUES ('j', 1, 'k', 'm')",
                [],
            )?;
            Ok(())
        })
        .unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let n: i64 = db
            .call_blocking(|c| Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 1);
    }
}
