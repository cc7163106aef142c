//! Synthetic textured images for the pipeline's tests.

use super::RgbImage;

/// A deterministic image with gradients and fine texture (not flat colour), so that JPEG
/// round trips exercise real entropy decoding.
pub(crate) fn textured_rgb(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let noise = (x.wrapping_mul(73_856_093)
                ^ y.wrapping_mul(19_349_663)
                ^ seed.wrapping_mul(83_492_791))
                % 23;
            pixels.push((x * 255 / width.max(1) + noise) as u8);
            pixels.push((y * 255 / height.max(1) + noise) as u8);
            pixels.push(((seed * 40 + (x + y) * 3) % 256) as u8);
        }
    }
    RgbImage {
        width,
        height,
        pixels,
    }
}

pub(crate) fn encode_jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            &image.pixels,
            image.width,
            image.height,
            image::ExtendedColorType::Rgb8,
        )
        .expect("encode jpeg");
    bytes
}

pub(crate) fn encode_png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut bytes);
    image::ImageEncoder::write_image(
        encoder,
        &image.pixels,
        image.width,
        image.height,
        image::ExtendedColorType::Rgb8,
    )
    .expect("encode png");
    bytes
}
