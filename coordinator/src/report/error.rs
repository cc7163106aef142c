//! What rendering the report can fail with.

use crate::error::CoordinatorError;

/// A report that could not be drawn or written; the results it describes stay valid.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the embedded chart font could not be loaded")]
    Font,
    #[error("drawing {file}: {message}")]
    Draw { file: String, message: String },
    #[error("encoding {file} as png: {source}")]
    Encode {
        file: String,
        #[source]
        source: image::ImageError,
    },
    #[error("writing {file}: {source}")]
    Write {
        file: String,
        #[source]
        source: CoordinatorError,
    },
    #[error("the results summary is inconsistent: {0}")]
    Inconsistent(String),
}

/// Attaches the file being drawn to any plotting error.
pub(super) trait DrawContext<T> {
    fn drawing(self, file: &str) -> Result<T, ReportError>;
}

impl<T, E: std::fmt::Display> DrawContext<T> for Result<T, E> {
    fn drawing(self, file: &str) -> Result<T, ReportError> {
        self.map_err(|e| ReportError::Draw {
            file: file.to_string(),
            message: e.to_string(),
        })
    }
}
