//! The image input pipeline: blob sources, decoding and resizing, the decoded-image cache,
//! augmentation, and the threaded batch loader that feeds training and evaluation.

mod augment;
mod batch;
mod cache;
mod decode;
mod error;
mod loader;
mod order;
mod source;
#[cfg(test)]
pub(crate) mod test_images;

pub use augment::{AugmentChoice, choose_augment};
pub use batch::Batch;
pub use cache::{CacheStats, ImageCache};
pub use decode::{RgbImage, decode_rgb, load_resized, resize_square};
pub use error::DataError;
pub use loader::{BatchIter, Loader, PipelineOptions};
pub use order::{epoch_order, epoch_seed};
pub use source::{BlobSource, FolderSource, HashDirSource};
