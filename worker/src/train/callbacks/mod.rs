//! Keras-style callbacks as small strategy objects: each sees the epoch's monitored value
//! and returns a decision; their state serializes so a resumed fold decides identically.

mod best_checkpoint;
mod early_stopping;
mod reduce_lr;

pub use best_checkpoint::BestCheckpoint;
pub use early_stopping::EarlyStopping;
pub use reduce_lr::{LrDecision, ReduceLrOnPlateau};

/// JSON has no infinity: a best value of +inf ("nothing seen yet") is written as `null`.
mod infinity_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            s.serialize_some(value)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}
