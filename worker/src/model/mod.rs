//! DenseNet121 image classifier with torchvision parameter names and the seed's Keras head.
//!
//! Variable names (all in one `VarStore`):
//! - `features.*`: exactly torchvision's DenseNet (`features.conv0`, `features.norm0`,
//!   `features.denseblock{b}.denselayer{l}.{norm1,conv1,norm2,conv2}`,
//!   `features.transition{t}.{norm,conv}`, `features.norm5`), so torchvision weights load unchanged;
//!   BatchNorm variables are `weight`, `bias`, `running_mean`, `running_var`.
//! - `head.bn0` (BatchNorm1d on pooled features), `head.dense` (Dense(head_units), ReLU, L1L2-penalised
//!   kernel), `head.bn1` (BatchNorm1d), `head.out` (Dense(classes), logits). Dense weights use PyTorch's
//!   `[out, in]` layout.
//!
//! `scripts/foldtrain_torch.py` rebuilds the same model in PyTorch from saved weights.

mod classifier;
mod config;
mod densenet;
mod error;
mod head;
mod weights;

pub use classifier::Classifier;
pub use config::DenseNetConfig;
pub use densenet::DenseNetFeatures;
pub use error::ModelError;
pub use head::Head;
pub use weights::{LoadReport, load_pretrained, load_pretrained_bytes, load_weights, save_weights};

use std::cell::Cell;
use std::sync::Mutex;

/// libtorch's global generator, which initialises every model's weights.
static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`GLOBAL_GENERATOR`], so holding it again is a no-op.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with libtorch's global generator seeded to `seed` and held by this thread
/// alone: two folds built at once on one worker (a slot per GPU) would otherwise draw
/// from each other's sequence, and a fold's initial weights would depend on timing.
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    drawing_alone(|| {
        tch::manual_seed(seed);
        f()
    })
}

/// Runs `f` holding libtorch's global generator, unseeded: every model draws its initial
/// weights, even one whose weights are then loaded from a file, and those draws must not
/// land in the middle of another thread's seeded sequence. Re-entrant on one thread.
pub fn drawing_alone<T>(f: impl FnOnce() -> T) -> T {
    if HOLDING.get() {
        return f();
    }
    let _only_us = GLOBAL_GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    /// Clears the flag however `f` ends, a panic included.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HOLDING.set(false);
        }
    }
    HOLDING.set(true);
    let _release = Release;
    f()
}
