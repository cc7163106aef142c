//! Data set ingestion and validation: both layouts users have, every image hashed and
//! checked, every problem reported with its file and CSV line.

mod csv_layout;
mod csv_table;
mod error;
mod finding;
mod folder_layout;
mod image_check;
mod image_list;
mod inspect;
mod load;
mod manifest;
mod paths;
mod raw;
mod report;
mod spec;
mod test_truth;

#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod test_images;

pub use error::DatasetError;
pub use finding::{Finding, FindingKind, Location, Severity};
pub use image_list::{ImageList, list_images};
pub use inspect::{NoProgress, Progress};
pub use load::{Loaded, load};
pub use manifest::{Dataset, Entry};
pub use report::{ClassCount, ValidationReport};
pub use spec::{CheckOptions, Columns, DatasetSpec, Layout, LoadOptions, TestSet};
