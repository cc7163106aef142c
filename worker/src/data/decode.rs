//! Decoding image bytes to 8-bit RGB and resizing to the square training size.

use fast_image_resize::images::{Image, ImageRef as PixelsRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use foldtrain_proto::config::Resize;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::DataError;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

const JPEG_MAGIC: [u8; 3] = [0xFF, 0xD8, 0xFF];

/// Decodes JPEG with zune-jpeg (grayscale, CMYK and YCCK come out as RGB) and every other
/// supported format with `image`. `name` is only used in errors.
pub fn decode_rgb(name: &str, bytes: &[u8]) -> Result<RgbImage, DataError> {
    if bytes.is_empty() {
        return Err(DataError::decode(name, "file is empty"));
    }
    let image = if bytes.starts_with(&JPEG_MAGIC) {
        decode_jpeg(name, bytes)?
    } else {
        let decoded = image::load_from_memory(bytes).map_err(|e| DataError::decode(name, e))?;
        let rgb = decoded.into_rgb8();
        RgbImage {
            width: rgb.width(),
            height: rgb.height(),
            pixels: rgb.into_raw(),
        }
    };
    if image.width == 0 || image.height == 0 {
        return Err(DataError::decode(name, "image has no pixels"));
    }
    Ok(image)
}

fn decode_jpeg(name: &str, bytes: &[u8]) -> Result<RgbImage, DataError> {
    // Strict mode turns a truncated or damaged scan into an error; the lenient default
    // pads missing data with grey, which would silently train on broken images.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder
        .decode()
        .map_err(|e| DataError::decode(name, format!("{e:?}")))?;
    let info = decoder
        .info()
        .ok_or_else(|| DataError::decode(name, "jpeg headers missing after decode"))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let expected = width as usize * height as usize * 3;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) || pixels.len() != expected {
        return Err(DataError::decode(
            name,
            format!(
                "jpeg decoded to {:?} with {} bytes, expected RGB with {expected}",
                decoder.output_colorspace(),
                pixels.len()
            ),
        ));
    }
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// Resizes to `size` x `size` without keeping the aspect ratio, as the seed did.
/// Nearest picks one source pixel exactly as PIL does (Keras' `load_img` default); bilinear
/// averages over the source footprint when shrinking, like PIL's `BILINEAR`.
pub fn resize_square(
    name: &str,
    image: &RgbImage,
    size: u32,
    resize: Resize,
    resizer: &mut Resizer,
) -> Result<Vec<u8>, DataError> {
    if image.width == size && image.height == size {
        return Ok(image.pixels.clone());
    }
    if resize == Resize::Nearest {
        return Ok(resize_nearest_like_pil(image, size));
    }
    let src = PixelsRef::new(image.width, image.height, &image.pixels, PixelType::U8x3)
        .map_err(|e| DataError::decode(name, format!("bad pixel buffer: {e}")))?;
    let mut dst = Image::new(size, size, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| DataError::decode(name, format!("resize to {size}x{size} failed: {e}")))?;
    Ok(dst.into_vec())
}

/// The source index of each output pixel along one axis, as PIL's `ImagingScaleAffine`
/// computes it: start at half a step and add the step in f64, truncating each time. The
/// running sum (not `(i + 0.5) * step`) decides ties, so this matches PIL to the pixel.
fn nearest_indices(source: u32, size: u32) -> Vec<usize> {
    let step = f64::from(source) / f64::from(size);
    let mut at = step * 0.5;
    (0..size)
        .map(|_| {
            let index = (at as usize).min(source as usize - 1);
            at += step;
            index
        })
        .collect()
}

fn resize_nearest_like_pil(image: &RgbImage, size: u32) -> Vec<u8> {
    let xs = nearest_indices(image.width, size);
    let row_bytes = image.width as usize * 3;
    let mut out = Vec::with_capacity(size as usize * size as usize * 3);
    for y in nearest_indices(image.height, size) {
        let row = &image.pixels[y * row_bytes..(y + 1) * row_bytes];
        for &x in &xs {
            out.extend_from_slice(&row[x * 3..x * 3 + 3]);
        }
    }
    out
}

/// Decode then resize: the work the cache saves on every epoch after the first.
pub fn load_resized(
    name: &str,
    bytes: &[u8],
    size: u32,
    resize: Resize,
    resizer: &mut Resizer,
) -> Result<Vec<u8>, DataError> {
    let image = decode_rgb(name, bytes)?;
    resize_square(name, &image, size, resize, resizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_images::{encode_jpeg, encode_png, textured_rgb};

    #[test]
    fn jpeg_and_png_decode_to_rgb() {
        let rgb = textured_rgb(40, 30, 7);
        let jpeg = decode_rgb("a.jpg", &encode_jpeg(&rgb, 95)).unwrap();
        assert_eq!(
            (jpeg.width, jpeg.height, jpeg.pixels.len()),
            (40, 30, 40 * 30 * 3)
        );
        // Lossy, but close to the source on average.
        let mean_error: f64 = jpeg
            .pixels
            .iter()
            .zip(&rgb.pixels)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum::<f64>()
            / rgb.pixels.len() as f64;
        assert!(mean_error < 12.0, "mean error {mean_error}");

        let png = decode_rgb("a.png", &encode_png(&rgb)).unwrap();
        assert_eq!(png, rgb, "png is lossless");
    }

    #[test]
    fn grayscale_jpeg_comes_out_as_rgb() {
        let gray = image::GrayImage::from_fn(16, 8, |x, y| image::Luma([(x * 10 + y * 5) as u8]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
            .encode_image(&gray)
            .unwrap();
        let decoded = decode_rgb("gray.jpg", &bytes).unwrap();
        assert_eq!(decoded.pixels.len(), 16 * 8 * 3);
        for px in decoded.pixels.chunks_exact(3) {
            assert!(px[0] == px[1] && px[1] == px[2], "{px:?}");
        }
    }

    #[test]
    fn empty_truncated_and_garbage_bytes_are_decode_errors() {
        let jpeg = encode_jpeg(&textured_rgb(64, 64, 1), 90);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty.jpg", Vec::new()),
            ("half.jpg", jpeg[..jpeg.len() / 2].to_vec()),
            ("most.jpg", jpeg[..jpeg.len() * 9 / 10].to_vec()),
            ("header-only.jpg", jpeg[..20].to_vec()),
            ("text.jpg", b"this is not an image".to_vec()),
        ];
        for (name, bytes) in cases {
            let err = decode_rgb(name, &bytes).unwrap_err();
            assert!(matches!(err, DataError::Decode { .. }), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
            assert!(!err.retryable());
        }
    }

    #[test]
    fn resize_makes_square_images_with_the_chosen_filter() {
        // Left half black, right half white: nearest keeps only 0 and 255, bilinear blends
        // at the edge.
        let (w, h) = (8u32, 4u32);
        let pixels = (0..h)
            .flat_map(|_| (0..w).flat_map(|x| [if x < w / 2 { 0u8 } else { 255 }; 3]))
            .collect();
        let image = RgbImage {
            width: w,
            height: h,
            pixels,
        };
        let mut resizer = Resizer::new();
        let nearest = resize_square("a", &image, 6, Resize::Nearest, &mut resizer).unwrap();
        let bilinear = resize_square("a", &image, 6, Resize::Bilinear, &mut resizer).unwrap();
        assert_eq!(nearest.len(), 6 * 6 * 3);
        assert!(nearest.iter().all(|&v| v == 0 || v == 255));
        assert!(bilinear.iter().any(|&v| v != 0 && v != 255));
        assert_eq!(bilinear[0], 0);
        assert_eq!(bilinear[6 * 3 - 1], 255);
        let same = resize_square("a", &image, 6, Resize::Nearest, &mut resizer).unwrap();
        assert_eq!(nearest, same);
    }
}
