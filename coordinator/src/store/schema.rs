//! The SQLite schema and its migrations, versioned through `PRAGMA user_version`.

use rusqlite::Connection;

use crate::error::{CoordinatorError, Result};

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only: a released
/// migration is never edited, so every database reaches the same schema.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        seq           INTEGER NOT NULL UNIQUE,
        name          TEXT NOT NULL,
        state         TEXT NOT NULL,
        message       TEXT NOT NULL DEFAULT '',
        config_toml   TEXT NOT NULL,
        class_names   TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        finished_ms   INTEGER,
        summary_json  TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE job_images (
        job_id  TEXT NOT NULL REFERENCES jobs(id),
        split   TEXT NOT NULL CHECK (split IN ('train', 'test')),
        row     INTEGER NOT NULL,
        hash    BLOB NOT NULL,
        name    TEXT NOT NULL,
        label   INTEGER,
        grp     TEXT NOT NULL,
        size    INTEGER NOT NULL,
        fold    INTEGER,
        PRIMARY KEY (job_id, split, row)
    );
    CREATE TABLE folds (
        job_id              TEXT NOT NULL REFERENCES jobs(id),
        fold                INTEGER NOT NULL,
        state               TEXT NOT NULL,
        attempts            INTEGER NOT NULL DEFAULT 0,
        best_epoch          INTEGER,
        best_val_loss       REAL,
        epochs_run          INTEGER,
        early_stopped       INTEGER,
        latest_checkpoint   BLOB,
        latest_epoch        INTEGER,
        best_checkpoint     BLOB,
        best_checkpoint_epoch INTEGER,
        oof_blob            BLOB,
        test_blob           BLOB,
        PRIMARY KEY (job_id, fold)
    );
    CREATE TABLE attempts (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id              TEXT NOT NULL REFERENCES jobs(id),
        fold                INTEGER NOT NULL,
        worker_id           TEXT NOT NULL,
        slot                INTEGER NOT NULL,
        state               TEXT NOT NULL,
        reason              TEXT NOT NULL DEFAULT '',
        started_ms          INTEGER NOT NULL,
        ended_ms            INTEGER,
        resumed_from_epoch  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX attempts_by_fold ON attempts(job_id, fold);
    CREATE TABLE workers (
        id             TEXT PRIMARY KEY,
        address        TEXT NOT NULL,
        hostname       TEXT NOT NULL,
        slots_json     TEXT NOT NULL,
        registered_ms  INTEGER NOT NULL,
        last_seen_ms   INTEGER NOT NULL
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id   TEXT NOT NULL,
        fold     INTEGER,
        attempt  INTEGER,
        at_ms    INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        message  TEXT NOT NULL
    );
    CREATE INDEX events_by_job ON events(job_id);
    CREATE TABLE epoch_metrics (
        job_id          TEXT NOT NULL REFERENCES jobs(id),
        fold            INTEGER NOT NULL,
        epoch           INTEGER NOT NULL,
        attempt         INTEGER NOT NULL,
        loss            REAL NOT NULL,
        accuracy        REAL NOT NULL,
        f1              REAL NOT NULL,
        val_loss        REAL NOT NULL,
        val_accuracy    REAL NOT NULL,
        val_f1          REAL NOT NULL,
        lr              REAL NOT NULL,
        images_per_sec  REAL NOT NULL,
        seconds         REAL NOT NULL,
        PRIMARY KEY (job_id, fold, epoch)
    );
    "#,
    // 2: seconds per phase of a job, for its time breakdown; fold -1 is the job's own.
    r#"
    CREATE TABLE phase_seconds (
        job_id   TEXT NOT NULL REFERENCES jobs(id),
        fold     INTEGER NOT NULL,
        phase    TEXT NOT NULL,
        seconds  REAL NOT NULL,
        PRIMARY KEY (job_id, fold, phase)
    );
    "#,
    // 3: whether an attempt used up one of its fold's train.max_attempts. Attempts that
    // ended before it existed are charged by their recorded cause: every failure but a
    // busy slot or a stopping worker, and a lost worker.
    r#"
    ALTER TABLE attempts ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;
    UPDATE attempts SET charged = 1
     WHERE (state = 'failed' AND reason NOT LIKE 'busy:%' AND reason NOT LIKE 'worker_stopping:%')
        OR (state = 'lost' AND reason LIKE 'worker_lost:%');
    "#,
    // 4: finding who still refers to a blob (an image shared by jobs) without a scan.
    r#"
    CREATE INDEX job_images_by_hash ON job_images(hash);
    "#,
    // 5: the blob of a job's pretrained weights (model.pretrained), so it stays while a
    // job refers to it and goes with the last one.
    r#"
    ALTER TABLE jobs ADD COLUMN pretrained_blob BLOB;
    CREATE INDEX jobs_by_pretrained_blob ON jobs(pretrained_blob);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies every pending migration, each in its own transaction with the version bump,
/// so a crash mid-migration leaves the previous version intact.
pub fn migrate(conn: &mut Connection) -> Result<u32> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(CoordinatorError::Corrupt(format!(
            "database schema version {current} is newer than this build's {SCHEMA_VERSION}; upgrade foldtrain"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as u32 + 1)?;
        tx.commit()?;
    }
    Ok(SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_current_version_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // A second run is a no-op rather than a "table exists" error.
        migrate(&mut conn).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN \
                 ('jobs','folds','attempts','workers','events','epoch_metrics','phase_seconds')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 7);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
