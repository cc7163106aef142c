//! The chart font, embedded in the binary: a fresh machine may have no system fonts and
//! nothing can be downloaded, so the charts never depend on what is installed.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

use super::error::ReportError;

/// The family every chart asks for; plotters' own defaults (axis labels, legends) use it too.
pub(super) const FAMILY: &str = "sans-serif";

/// Registers Noto Sans (Apache-2.0) under [`FAMILY`] once per process.
pub(super) fn ensure_registered() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FAMILY, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok());
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

#[cfg(test)]
mod tests {
    use plotters::style::IntoFont;

    use super::*;

    #[test]
    fn the_embedded_font_measures_text() {
        ensure_registered().unwrap();
        let font = (FAMILY, 20).into_font();
        let (short, _) = font.box_size("ulcer").unwrap();
        let (long, height) = font.box_size("reduced mucosal view").unwrap();
        assert!(short > 20 && long > 2 * short, "{short} {long}");
        assert!(height > 5, "{height}");
    }
}
