//! Is this file a whole image? A fast structural check by default (format, header,
//! end marker), a full decode on request.

use std::io::Cursor;

use image::{ImageFormat, ImageReader};

/// Why a file is not a usable image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageProblem {
    Empty,
    Undecodable(String),
    Truncated(String),
}

/// Checks `bytes` as an image. The fast path reads the header (format and a non-zero
/// size) and looks for the format's end marker, which catches truncated files without
/// decoding pixels; `deep` also decodes every pixel.
pub(crate) fn check_image(bytes: &[u8], deep: bool) -> Result<(), ImageProblem> {
    if bytes.is_empty() {
        return Err(ImageProblem::Empty);
    }
    let format = image::guess_format(bytes)
        .map_err(|_| ImageProblem::Undecodable("not a recognised image format".into()))?;
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader.into_dimensions().map_err(|e| {
        ImageProblem::Undecodable(format!("cannot read the {format:?} header: {e}"))
    })?;
    if width == 0 || height == 0 {
        return Err(ImageProblem::Undecodable(format!(
            "the image is {width}x{height}"
        )));
    }
    check_end_marker(bytes, format)?;
    if deep {
        image::load_from_memory_with_format(bytes, format)
            .map_err(|e| ImageProblem::Undecodable(format!("cannot decode: {e}")))?;
    }
    Ok(())
}

/// How far from the end an end marker may sit; some cameras append a short trailer.
const TRAILER_ALLOWANCE: usize = 4096;

fn check_end_marker(bytes: &[u8], format: ImageFormat) -> Result<(), ImageProblem> {
    let tail = &bytes[bytes.len().saturating_sub(TRAILER_ALLOWANCE)..];
    let (marker, what): (&[u8], &str) = match format {
        // EOI: the marker cannot occur inside entropy-coded data, where 0xFF is stuffed.
        ImageFormat::Jpeg => (&[0xFF, 0xD9], "JPEG end-of-image marker"),
        ImageFormat::Png => (b"IEND", "PNG IEND chunk"),
        // Other formats have no cheap end marker; the deep check decodes them.
        _ => return Ok(()),
    };
    if tail.windows(marker.len()).any(|w| w == marker) {
        Ok(())
    } else {
        Err(ImageProblem::Truncated(format!(
            "no {what} at the end of the file ({} bytes); the file is probably cut short",
            bytes.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_jpeg() -> Vec<u8> {
        crate::dataset::test_images::jpeg(90)
    }

    fn tiny_png() -> Vec<u8> {
        let img = image::RgbImage::from_fn(8, 8, |x, _| image::Rgb([x as u8, 0, 0]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn whole_images_pass_both_checks() {
        for bytes in [tiny_jpeg(), tiny_png()] {
            assert_eq!(check_image(&bytes, false), Ok(()));
            assert_eq!(check_image(&bytes, true), Ok(()));
        }
    }

    #[test]
    fn empty_garbage_and_truncated_files_are_told_apart() {
        assert_eq!(check_image(&[], false), Err(ImageProblem::Empty));
        assert!(matches!(
            check_image(b"this is a text file, not an image", false),
            Err(ImageProblem::Undecodable(_))
        ));
        let jpeg = tiny_jpeg();
        let cut = &jpeg[..jpeg.len() - 40];
        assert!(matches!(
            check_image(cut, false),
            Err(ImageProblem::Truncated(_))
        ));
        let png = tiny_png();
        assert!(matches!(
            check_image(&png[..png.len() - 12], false),
            Err(ImageProblem::Truncated(_))
        ));
        // A JPEG cut inside its header cannot even be measured.
        assert!(matches!(
            check_image(&jpeg[..30], false),
            Err(ImageProblem::Undecodable(_))
        ));
    }

    #[test]
    fn deep_check_catches_damage_the_fast_check_cannot_see() {
        // Header and end marker intact, Huffman tables gone: only decoding notices.
        let jpeg = crate::dataset::test_images::without_huffman_tables(&tiny_jpeg());
        assert_eq!(check_image(&jpeg, false), Ok(()));
        assert!(matches!(
            check_image(&jpeg, true),
            Err(ImageProblem::Undecodable(_))
        ));
    }
}
