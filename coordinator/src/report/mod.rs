//! The human-readable side of the results: charts (label distribution, per-fold curves,
//! confusion matrix) and a self-contained `report.html` linking them.

mod canvas;
mod confusion;
mod curves;
mod error;
mod font;
mod html;
mod label_chart;
mod render;

#[cfg(test)]
mod tests;

pub use error::ReportError;
pub use html::escape as escape_html;
pub use render::render_report;
