//! Fold splitting: stratified and stratified-group k-fold, identical to scikit-learn.

mod dataset_folds;
mod error;
pub mod mt19937;
mod numpy_order;
mod stratified;
mod stratified_group;

#[cfg(test)]
mod fixture_tests;

pub use dataset_folds::dataset_folds;
pub use error::SplitError;
pub use stratified::stratified_folds;
pub use stratified_group::stratified_group_folds;
