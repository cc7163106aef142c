//! Where progress bars go: stderr (hidden by indicatif when it is not a terminal) or
//! nowhere (tests, `--quiet`, machine-readable output).

use indicatif::ProgressDrawTarget;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    Stderr,
    Hidden,
}

impl Draw {
    pub fn target(self) -> ProgressDrawTarget {
        match self {
            Draw::Stderr => ProgressDrawTarget::stderr(),
            Draw::Hidden => ProgressDrawTarget::hidden(),
        }
    }
}
