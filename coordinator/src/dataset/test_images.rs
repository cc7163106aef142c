//! Small images for tests, whole and deliberately damaged.

use std::io::Cursor;

/// A 48 px JPEG whose scan data outweighs its headers, so cutting it in half cuts the
/// scan; `shade` varies the bytes.
pub(crate) fn jpeg(shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 48, |x, y| {
        image::Rgb([shade, (x * 5) as u8 ^ (y * 3) as u8, ((x * y) % 251) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

/// The JPEG with its Huffman tables (DHT segments) removed: header and end marker stay
/// intact, but the scan can no longer be decoded.
pub(crate) fn without_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    while i < sos {
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        if jpeg[i + 1] != 0xC4 {
            out.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    out.extend_from_slice(&jpeg[sos..]);
    out
}
