//! Drawing into an in-memory RGB buffer and encoding it as PNG with the `image` crate,
//! which the coordinator already links (plotters' own encoder would pull a second one).

use std::io::Cursor;

use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::style::WHITE;

use super::error::{DrawContext, ReportError};
use super::font;

pub(super) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws a `width × height` picture with `draw` on a white background; returns PNG bytes.
pub(super) fn render_png(
    file: &str,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), ReportError>,
) -> Result<Vec<u8>, ReportError> {
    font::ensure_registered()?;
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).drawing(file)?;
        draw(&root)?;
        root.present().drawing(file)?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
        ReportError::Inconsistent(format!("{file}: pixel buffer does not match its size"))
    })?;
    let mut png = Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|source| ReportError::Encode {
            file: file.to_string(),
            source,
        })?;
    Ok(png.into_inner())
}
