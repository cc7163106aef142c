//! Why a fold split cannot be made.

use thiserror::Error;

/// A split that scikit-learn would also refuse, or inputs that do not fit together.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("folds must be at least 2, got {0}")]
    TooFewFolds(u32),
    #[error("cannot split {samples} rows into {folds} folds")]
    TooFewRows { folds: u32, samples: usize },
    #[error("every class has fewer rows than the {folds} folds (the largest has {largest})")]
    ClassesTooSmall { folds: u32, largest: usize },
    #[error("cannot split {groups} groups into {folds} folds; use at most {groups} folds")]
    TooFewGroups { folds: u32, groups: usize },
    #[error("seed {0} is out of range: numpy's RandomState takes 0 to 4294967295")]
    SeedOutOfRange(u64),
    #[error("{labels} labels but {groups} groups; every row needs both")]
    LengthMismatch { labels: usize, groups: usize },
}
