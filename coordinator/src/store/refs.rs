//! Which blobs the jobs still refer to, so the ones nothing needs can go: superseded
//! checkpoints, and everything of a deleted job that no other job shares.

use foldtrain_proto::BlobHash;
use rusqlite::{Connection, params};

use crate::error::Result;

/// Whether any job still refers to `blob`: as one of its images, its pretrained weights,
/// a fold's checkpoint or a fold's probabilities.
pub fn in_use(conn: &Connection, blob: &BlobHash) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM job_images WHERE hash = ?1) \
             OR EXISTS (SELECT 1 FROM jobs WHERE pretrained_blob = ?1) \
             OR EXISTS (SELECT 1 FROM folds WHERE latest_checkpoint = ?1 OR best_checkpoint = ?1 \
                        OR oof_blob = ?1 OR test_blob = ?1)",
        params![&blob.0[..]],
        |r| r.get(0),
    )?)
}

/// The blobs among `candidates` that nothing refers to any more, each once, in the order
/// given. Called in the same database call as the change that released them, so no
/// other writer comes between.
pub fn unreferenced(
    conn: &Connection,
    candidates: impl IntoIterator<Item = BlobHash>,
) -> Result<Vec<BlobHash>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for blob in candidates {
        if seen.insert(blob) && !in_use(conn, &blob)? {
            out.push(blob);
        }
    }
    Ok(out)
}
