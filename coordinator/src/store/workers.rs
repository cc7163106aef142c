//! Worker rows: who registered, where they listen and when they were last heard from.

use foldtrain_proto::WorkerId;
use rusqlite::{Connection, params};

use super::records::WorkerRecord;
use crate::error::{CoordinatorError, Result};

/// Inserts or refreshes a worker's registration.
pub fn upsert_worker(conn: &Connection, w: &WorkerRecord) -> Result<()> {
    let slots =
        serde_json::to_string(&w.slots).map_err(|e| CoordinatorError::encode("worker slots", e))?;
    conn.execute(
        "INSERT INTO workers (id, address, hostname, slots_json, registered_ms, last_seen_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT(id) DO UPDATE SET address = ?2, hostname = ?3, slots_json = ?4, \
         registered_ms = ?5, last_seen_ms = ?6",
        params![
            w.id.as_str(),
            w.address,
            w.hostname,
            slots,
            w.registered_ms,
            w.last_seen_ms
        ],
    )?;
    Ok(())
}

pub fn touch_worker(conn: &Connection, id: &WorkerId, at_ms: i64) -> Result<()> {
    conn.execute(
        "UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1",
        params![id.as_str(), at_ms],
    )?;
    Ok(())
}

/// Every worker ever registered, by id.
pub fn list_workers(conn: &Connection) -> Result<Vec<WorkerRecord>> {
    let mut stmt = conn
        .prepare("SELECT id, address, hostname, slots_json, registered_ms, last_seen_ms FROM workers ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let slots: String = r.get(3)?;
        out.push(WorkerRecord {
            id: WorkerId::new(r.get::<_, String>(0)?),
            address: r.get(1)?,
            hostname: r.get(2)?,
            slots: serde_json::from_str(&slots)
                .map_err(|e| CoordinatorError::Corrupt(format!("worker slots: {e}")))?,
            registered_ms: r.get(4)?,
            last_seen_ms: r.get(5)?,
        });
    }
    Ok(out)
}
