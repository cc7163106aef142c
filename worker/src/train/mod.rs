//! The training loop of one fold, in parts: a step (one batch), an epoch (training and
//! validation passes), fit (epochs, callbacks, checkpoints) and predict (probabilities
//! from given weights, also outside training); with the hand-written Keras Adam, the
//! smoothed loss, the AMP loss scaler and the resumable checkpoint format.

pub mod adam;
pub mod amp;
pub mod callbacks;
pub mod checkpoint;
mod engine;
mod ensemble;
mod epoch;
mod error;
mod evaluate;
mod fit;
pub mod loss;
pub mod meter;
mod options;
mod predict;
mod setup;
mod sink;
mod spans;
mod state;
mod step;
#[cfg(test)]
mod test_fold;
mod weights;

pub use engine::run_fold;
pub use ensemble::{Ensemble, RowOutcome};
pub use error::TrainError;
pub use options::{FoldControl, RunOptions, spawn_fold};
pub use predict::{PredictError, PredictOptions, Predictor, Probabilities};
pub use setup::set_torch_threads;
pub use sink::{EventSink, SinkClosed};
