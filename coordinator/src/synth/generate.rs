//! Writing the synthetic data set in the seed's layout: `Training_set.csv`, `train/`,
//! `Testing_set.csv`, `test/`; and, outside that layout, `test_truth.csv` (the test
//! images' labels, for `--test-truth`).

use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use rayon::prelude::*;

use super::SynthError;
use super::canvas::Canvas;
use super::cues::paint_cue;
use super::mucosa::{VideoStyle, finish, paint_mucosa, paint_vignette};
use super::plan::{Defect, Frame, KVASIR_CLASSES, Plan, class_counts, plan};
use super::rng::Rng;
use crate::dataset::Progress;

/// What to generate. `Default` is the demo data set: 300 training and 60 test images of
/// 64 pixels, seed 42, rare classes large enough for 5 folds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub train: usize,
    pub test: usize,
    pub image_size: u32,
    pub seed: u64,
    /// Every class gets at least `folds + 1` training images.
    pub folds: u32,
    /// Add a `video_id` column to `Training_set.csv`.
    pub groups: bool,
    /// Add zero-byte, truncated and non-image files to the training set.
    pub defects: bool,
    /// Write into an output folder that already holds a data set.
    pub force: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("synthetic-capsule"),
            train: 300,
            test: 60,
            image_size: 64,
            seed: 42,
            folds: 5,
            groups: false,
            defects: false,
            force: false,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Training images per class, in `KVASIR_CLASSES` order (defects not counted).
    pub class_counts: Vec<(String, usize)>,
    pub train_rows: usize,
    pub test_rows: usize,
    /// Videos the training frames come from.
    pub videos: usize,
    pub defects: usize,
}

const JPEG_QUALITY: u8 = 90;
const TRAIN_STREAM: u64 = 1;
const TEST_STREAM: u64 = 2;
const VIDEO_STREAM: u64 = 3;

/// Draws and writes the data set `options` describes; the same options always give the
/// same bytes.
pub fn generate(
    options: &SynthOptions,
    progress: &dyn Progress,
) -> Result<SynthSummary, SynthError> {
    if !(16..=1024).contains(&options.image_size) {
        return Err(SynthError::ImageSize(options.image_size));
    }
    if options.folds < 2 {
        return Err(SynthError::Folds(options.folds));
    }
    let counts = class_counts(options.train, options.folds as usize + 1)?;
    let plan = plan(
        &counts,
        options.test,
        options.defects,
        &mut Rng::derive(options.seed, 0, 0),
    );
    let styles: Vec<VideoStyle> = (0..plan.videos)
        .map(|v| VideoStyle::new(&mut Rng::derive(options.seed, VIDEO_STREAM, v as u64)))
        .collect();

    let out = &options.out;
    if out.join("Training_set.csv").exists() && !options.force {
        return Err(SynthError::NotEmpty(out.clone()));
    }
    for dir in [out.join("train"), out.join("test")] {
        std::fs::create_dir_all(&dir).map_err(|source| SynthError::Io { path: dir, source })?;
    }
    write_images(&plan, &styles, options, progress)?;
    write_file(
        out.join("Training_set.csv"),
        train_csv(&plan, options.groups),
    )?;
    write_file(out.join("Testing_set.csv"), test_csv(&plan))?;
    write_file(out.join(TEST_TRUTH_FILE), test_truth_csv(&plan))?;

    Ok(SynthSummary {
        class_counts: KVASIR_CLASSES
            .iter()
            .zip(&counts)
            .map(|((n, _), &c)| (n.to_string(), c))
            .collect(),
        train_rows: plan.train.len(),
        test_rows: plan.test.len(),
        videos: plan.train_videos,
        defects: plan.train.iter().filter(|f| f.defect.is_some()).count(),
    })
}

/// Draws every frame of `plan` into `train/` and `test/`, in parallel. Each image has
/// its own random stream, so the bytes do not depend on the drawing order.
fn write_images(
    plan: &Plan,
    styles: &[VideoStyle],
    options: &SynthOptions,
    progress: &dyn Progress,
) -> Result<(), SynthError> {
    progress.begin(
        (plan.train.len() + plan.test.len()) as u64,
        "drawing images",
    );
    let size = options.image_size as usize;
    let write_all = |frames: &[Frame], dir: &Path, stream: u64| -> Result<(), SynthError> {
        frames.par_iter().enumerate().try_for_each(|(i, frame)| {
            let mut rng = Rng::derive(options.seed, stream, i as u64);
            let bytes = draw(frame, &styles[frame.video], size, &mut rng)?;
            write_file(dir.join(file_name(i)), bytes)?;
            progress.advance(1);
            Ok(())
        })
    };
    write_all(&plan.train, &options.out.join("train"), TRAIN_STREAM)?;
    write_all(&plan.test, &options.out.join("test"), TEST_STREAM)?;
    progress.finish();
    Ok(())
}

/// `Training_set.csv`: file name and label, and the video as the group when `groups`.
fn train_csv(plan: &Plan, groups: bool) -> String {
    let mut csv = String::from(if groups {
        "filename,label,video_id\n"
    } else {
        "filename,label\n"
    });
    for (i, frame) in plan.train.iter().enumerate() {
        let label = KVASIR_CLASSES[frame.class].0;
        csv.push_str(&format!("{},{label}", file_name(i)));
        if groups {
            csv.push_str(&format!(",vid_{:03}", frame.video));
        }
        csv.push('\n');
    }
    csv
}

/// The file holding the test images' labels, beside the seed's layout.
pub const TEST_TRUTH_FILE: &str = "test_truth.csv";

/// `test_truth.csv`: each test image's label, in `Testing_set.csv`'s order. The seed's
/// `Testing_set.csv` stays unlabelled, as the competition's was.
fn test_truth_csv(plan: &Plan) -> String {
    let mut csv = String::from("filename,label\n");
    for (i, frame) in plan.test.iter().enumerate() {
        csv.push_str(&format!(
            "{},{}\n",
            file_name(i),
            KVASIR_CLASSES[frame.class].0
        ));
    }
    csv
}

/// `Testing_set.csv`: the file names only.
fn test_csv(plan: &Plan) -> String {
    let mut csv = String::from("filename\n");
    for i in 0..plan.test.len() {
        csv.push_str(&format!("{}\n", file_name(i)));
    }
    csv
}

fn write_file(path: PathBuf, content: impl AsRef<[u8]>) -> Result<(), SynthError> {
    std::fs::write(&path, content).map_err(|source| SynthError::Io { path, source })
}

/// `Image_1.jpg`, `Image_2.jpg`, ... as in the seed's data set.
fn file_name(index: usize) -> String {
    format!("Image_{}.jpg", index + 1)
}

/// The JPEG bytes of one frame (or of its defect).
fn draw(
    frame: &Frame,
    style: &VideoStyle,
    size: usize,
    rng: &mut Rng,
) -> Result<Vec<u8>, SynthError> {
    match frame.defect {
        Some(Defect::ZeroBytes) => return Ok(Vec::new()),
        Some(Defect::NotAnImage) => return Ok(b"<html>this download failed</html>\n".to_vec()),
        Some(Defect::Truncated) | None => {}
    }
    let mut canvas = Canvas::new(size, [0.0; 3]);
    paint_mucosa(&mut canvas, style, rng);
    paint_cue(&mut canvas, frame.class, rng);
    paint_vignette(&mut canvas, style);
    let rgb = finish(&canvas, rng);
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
        .encode(
            &rgb,
            size as u32,
            size as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| SynthError::Encode(e.to_string()))?;
    if frame.defect == Some(Defect::Truncated) {
        bytes.truncate(bytes.len() / 2);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{
        CheckOptions, Columns, DatasetSpec, Layout, LoadOptions, NoProgress, TestSet, load,
    };

    fn options(out: &Path) -> SynthOptions {
        SynthOptions {
            out: out.to_path_buf(),
            train: 120,
            test: 12,
            image_size: 32,
            ..SynthOptions::default()
        }
    }

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut all = Vec::new();
        for sub in ["", "train", "test"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    all.push((
                        path.strip_prefix(dir).unwrap().display().to_string(),
                        std::fs::read(&path).unwrap(),
                    ));
                }
            }
        }
        all.sort();
        all
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        generate(&options(a.path()), &NoProgress).unwrap();
        generate(&options(b.path()), &NoProgress).unwrap();
        generate(
            &SynthOptions {
                seed: 7,
                ..options(c.path())
            },
            &NoProgress,
        )
        .unwrap();
        let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
        assert_eq!(fa.len(), 3 + 120 + 12);
        assert!(fa == fb, "the same seed gave different files");
        assert!(fa != fc, "another seed gave the same files");
    }

    #[test]
    fn output_is_a_valid_seed_layout_with_groups_and_defects() {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(
            &SynthOptions {
                groups: true,
                defects: true,
                ..options(dir.path())
            },
            &NoProgress,
        )
        .unwrap();
        assert_eq!(
            (summary.train_rows, summary.test_rows, summary.defects),
            (124, 12, 4)
        );
        assert!(
            summary.class_counts.iter().all(|(_, c)| *c >= 6),
            "{summary:?}"
        );
        let header = std::fs::read_to_string(dir.path().join("Training_set.csv")).unwrap();
        assert!(
            header.starts_with("filename,label,video_id\nImage_1.jpg,"),
            "{header}"
        );
        let spec = |skip_bad| DatasetSpec {
            layout: Layout::Csv {
                train_csv: dir.path().join("Training_set.csv"),
                train_dir: dir.path().join("train"),
                test: Some(TestSet {
                    csv: dir.path().join("Testing_set.csv"),
                    dir: dir.path().join("test"),
                    truth: Some(dir.path().join(TEST_TRUTH_FILE)),
                }),
            },
            columns: Columns {
                group: Some("video_id".into()),
                ..Columns::default()
            },
            checks: CheckOptions {
                skip_bad,
                deep_check: true,
            },
        };
        let strict = load(&spec(false), LoadOptions { folds: Some(5) }, &NoProgress);
        assert_eq!(
            strict.report.error_count(),
            4,
            "{}",
            strict.report.render(0)
        );
        let lenient = load(&spec(true), LoadOptions { folds: Some(5) }, &NoProgress);
        assert!(!lenient.report.has_errors(), "{}", lenient.report.render(0));
        assert_eq!(lenient.dataset.train.len(), 120);
        assert_eq!(lenient.dataset.classes.len(), 14);
        assert_eq!(lenient.dataset.test.len(), 12);
        let truth = std::fs::read_to_string(dir.path().join(TEST_TRUTH_FILE)).unwrap();
        let mut lines = truth.lines();
        assert_eq!(lines.next(), Some("filename,label"));
        let rows: Vec<(&str, &str)> = lines.map(|l| l.split_once(',').unwrap()).collect();
        assert_eq!(rows.len(), 12);
        assert_eq!(rows[0].0, "Image_1.jpg");
        assert!(lenient.dataset.test.iter().all(|e| e.label.is_some()));
        let first = lenient.dataset.test[0].label.unwrap() as usize;
        assert_eq!(lenient.dataset.classes[first], rows[0].1);
        let tested = std::fs::read_to_string(dir.path().join("Testing_set.csv")).unwrap();
        assert!(
            !tested.contains(rows[0].1),
            "the seed's test CSV stays unlabelled"
        );
        // Refuses to overwrite without --force.
        let again = generate(&options(dir.path()), &NoProgress).unwrap_err();
        assert!(again.to_string().contains("--force"), "{again}");
    }
}
