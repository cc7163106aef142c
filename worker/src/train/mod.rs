//! The training loop of one fold: a hand-written Keras Adam, the smoothed loss, Keras-style
//! callbacks, whole-epoch metrics, the AMP loss scaler, the resumable checkpoint format,
//! and the engine that runs a `FoldTask` and streams its events.

pub mod adam;
pub mod amp;
pub mod callbacks;
pub mod checkpoint;
mod engine;
mod error;
mod evaluate;
pub mod loss;
pub mod meter;
mod options;
mod sink;
mod spans;
mod state;
mod weights;

pub use engine::run_fold;
pub use error::TrainError;
pub use options::{RunOptions, spawn_fold};
pub use sink::{EventSink, SinkClosed};
