//! The resize filters against PIL, which Keras' `load_img` (the notebook's loader) calls.

use std::path::{Path, PathBuf};
use std::process::Command;

use fast_image_resize::Resizer;
use foldtrain_proto::config::Resize;
use foldtrain_worker::data::{decode_rgb, resize_square};

/// The project venv's python, or `FOLDTRAIN_PYTHON`.
fn python() -> PathBuf {
    std::env::var_os("FOLDTRAIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// A smooth gradient with sharp stripes, so both filters have work to do.
fn test_image(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let stripe = if (x / 3 + y / 5) % 2 == 0 { 0 } else { 90 };
        image::Rgb([
            ((x * 255) / width) as u8,
            ((y * 255) / height) as u8,
            (stripe + (x * y) % 160) as u8,
        ])
    })
}

#[test]
fn nearest_is_pil_exactly_and_bilinear_within_rounding() {
    let dir = tempfile::tempdir().unwrap();
    // Shrinking by non-integer factors and enlarging, with odd sizes.
    for (width, height, size) in [(336u32, 336u32, 229u32), (97, 61, 32), (40, 29, 64)] {
        let src = test_image(width, height);
        let png = dir.path().join("in.png");
        src.save(&png).unwrap();
        let status = Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/pil_resize.py"))
            .arg(&png)
            .arg(dir.path())
            .arg(size.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
        assert!(status.success(), "pil_resize.py failed: {status}");

        let decoded = decode_rgb("in.png", &std::fs::read(&png).unwrap()).unwrap();
        let mut resizer = Resizer::new();
        let mut ours =
            |resize| resize_square("in.png", &decoded, size, resize, &mut resizer).unwrap();
        let nearest = ours(Resize::Nearest);
        let pil_nearest = std::fs::read(dir.path().join("nearest.raw")).unwrap();
        assert_eq!(nearest.len(), pil_nearest.len());
        let differ = nearest
            .iter()
            .zip(&pil_nearest)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differ, 0,
            "{width}x{height} -> {size}: nearest differs from PIL in {differ} bytes"
        );

        let bilinear = ours(Resize::Bilinear);
        let pil_bilinear = std::fs::read(dir.path().join("bilinear.raw")).unwrap();
        let worst = bilinear
            .iter()
            .zip(&pil_bilinear)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        println!("{width}x{height} -> {size}: bilinear max |ours - PIL| = {worst}");
        assert!(
            worst <= 1,
            "{width}x{height} -> {size}: bilinear off by {worst}"
        );
    }
}
