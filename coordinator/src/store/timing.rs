//! Seconds spent per phase of a job, added up as they are measured (every attempt's share,
//! retries included), for the time breakdown in metrics.json.

use foldtrain_proto::{FoldIndex, JobId};
use rusqlite::{Connection, params};

use crate::error::Result;

/// The fold column's value for a phase of the whole job (SQLite never sees two NULLs in a
/// key as equal, so the upsert needs a number).
const JOB_LEVEL: i64 = -1;

/// What a stretch of a job's time went to. Where each is measured is said on its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The client, before submitting: reading, checking and hashing the data set.
    ClientHashing,
    /// The client, before submitting: uploading the images the coordinator lacked.
    ClientUpload,
    /// The worker's training passes (its epoch records).
    Training,
    /// The worker's validation passes (its epoch records).
    Validation,
    /// The worker's training thread at each epoch's end: copying the best weights when they
    /// improved, and encoding the latest checkpoint (its epoch records).
    CheckpointEncoding,
    /// The coordinator waiting for checkpoint bytes: a latest checkpoint after its epoch's
    /// record, the best weights after the last latest checkpoint.
    CheckpointStreaming,
    /// The coordinator writing checkpoints: blob file, fsync, database row.
    CheckpointStorage,
    /// The coordinator waiting for the out-of-fold and test probabilities after the fold's
    /// last checkpoint was stored.
    Prediction,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::ClientHashing,
        Phase::ClientUpload,
        Phase::Training,
        Phase::Validation,
        Phase::CheckpointEncoding,
        Phase::CheckpointStreaming,
        Phase::CheckpointStorage,
        Phase::Prediction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::ClientHashing => "client_hashing",
            Phase::ClientUpload => "client_upload",
            Phase::Training => "training",
            Phase::Validation => "validation",
            Phase::CheckpointEncoding => "checkpoint_encoding",
            Phase::CheckpointStreaming => "checkpoint_streaming",
            Phase::CheckpointStorage => "checkpoint_storage",
            Phase::Prediction => "prediction",
        }
    }

    /// `None` for a name this build does not know (written by a newer one).
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// Seconds of one phase, of one fold or (`fold` `None`) of the whole job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseSeconds {
    pub fold: Option<FoldIndex>,
    pub phase: Phase,
    pub seconds: f64,
}

/// Adds `seconds` to each phase of `fold` (or of the job). Zero and non-finite values are
/// left out.
pub fn add_seconds(
    conn: &Connection,
    job: &JobId,
    fold: Option<FoldIndex>,
    seconds: &[(Phase, f64)],
) -> Result<()> {
    let fold = fold.map_or(JOB_LEVEL, |f| i64::from(f.0));
    let mut stmt = conn.prepare_cached(
        "INSERT INTO phase_seconds (job_id, fold, phase, seconds) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (job_id, fold, phase) DO UPDATE SET seconds = seconds + excluded.seconds",
    )?;
    for &(phase, s) in seconds {
        if s.is_finite() && s > 0.0 {
            stmt.execute(params![job.as_str(), fold, phase.as_str(), s])?;
        }
    }
    Ok(())
}

/// Every phase recorded for `job`.
pub fn phase_seconds(conn: &Connection, job: &JobId) -> Result<Vec<PhaseSeconds>> {
    let mut stmt = conn.prepare(
        "SELECT fold, phase, seconds FROM phase_seconds WHERE job_id = ?1 ORDER BY fold, phase",
    )?;
    let rows = stmt.query_map([job.as_str()], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (fold, phase, seconds) = row?;
        if let Some(phase) = Phase::parse(&phase) {
            out.push(PhaseSeconds {
                fold: u32::try_from(fold).ok().map(FoldIndex),
                phase,
                seconds,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::migrate;

    #[test]
    fn seconds_add_up_per_fold_and_phase() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        // The jobs themselves are not the point here.
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        let job = JobId::new("job-1");
        let fold = Some(FoldIndex(2));
        add_seconds(
            &conn,
            &job,
            fold,
            &[(Phase::Training, 1.5), (Phase::Prediction, 0.0)],
        )
        .unwrap();
        add_seconds(&conn, &job, fold, &[(Phase::Training, 2.0)]).unwrap();
        add_seconds(&conn, &job, None, &[(Phase::ClientUpload, 0.25)]).unwrap();
        add_seconds(&conn, &JobId::new("other"), fold, &[(Phase::Training, 9.0)]).unwrap();
        conn.execute(
            "INSERT INTO phase_seconds VALUES ('job-1', 0, 'from_the_future', 1.0)",
            [],
        )
        .unwrap();

        let got = phase_seconds(&conn, &job).unwrap();
        assert_eq!(
            got,
            [
                PhaseSeconds {
                    fold: None,
                    phase: Phase::ClientUpload,
                    seconds: 0.25
                },
                PhaseSeconds {
                    fold,
                    phase: Phase::Training,
                    seconds: 3.5
                },
            ]
        );
    }

    #[test]
    fn phase_names_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("nonsense"), None);
    }
}
