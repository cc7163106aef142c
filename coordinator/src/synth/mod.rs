//! The synthetic capsule-endoscopy data set: Kvasir-Capsule's 14 classes and imbalance,
//! each class with its own visual cue, in the seed's CSV layout.

mod canvas;
mod cues;
mod error;
mod generate;
mod mucosa;
mod plan;
mod rng;

pub use error::SynthError;
pub use generate::{SynthOptions, SynthSummary, TEST_TRUTH_FILE, generate};
pub use plan::{KVASIR_CLASSES, class_counts};
