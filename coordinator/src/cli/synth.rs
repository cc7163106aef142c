//! `foldtrain synth`: writes the synthetic capsule data set in the seed's layout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::CommandResult;
use super::progress::Bar;
use crate::synth::{SynthOptions, generate};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Folder to write Training_set.csv, train/, Testing_set.csv and test/ into.
    #[arg(long, env = "FOLDTRAIN_SYNTH_OUT")]
    pub out: PathBuf,
    /// Training images (Kvasir-Capsule's class imbalance, scaled down).
    #[arg(long, env = "FOLDTRAIN_SYNTH_TRAIN", default_value_t = 300)]
    pub train: usize,
    /// Test images.
    #[arg(long, env = "FOLDTRAIN_SYNTH_TEST", default_value_t = 60)]
    pub test: usize,
    /// Width and height of every image, in pixels.
    #[arg(long, env = "FOLDTRAIN_SYNTH_IMAGE_SIZE", default_value_t = 64)]
    pub image_size: u32,
    /// Seed; the same seed writes byte-identical files.
    #[arg(long, env = "FOLDTRAIN_SYNTH_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Folds the data set must support: every class gets at least folds + 1 images.
    #[arg(long, env = "FOLDTRAIN_SYNTH_FOLDS", default_value_t = 5)]
    pub folds: u32,
    /// Add a video_id column (frames of one video look alike) for grouped splits.
    #[arg(long, env = "FOLDTRAIN_SYNTH_GROUPS")]
    pub groups: bool,
    /// Add zero-byte, truncated and non-image files, to exercise validation.
    #[arg(long, env = "FOLDTRAIN_SYNTH_DEFECTS")]
    pub defects: bool,
    /// Overwrite a data set already in --out.
    #[arg(long)]
    pub force: bool,
}

pub fn synth(args: SynthArgs) -> CommandResult {
    let options = SynthOptions {
        out: args.out,
        train: args.train,
        test: args.test,
        image_size: args.image_size,
        seed: args.seed,
        folds: args.folds,
        groups: args.groups,
        defects: args.defects,
        force: args.force,
    };
    let started = std::time::Instant::now();
    let summary = generate(&options, &Bar::new())?;
    println!(
        "wrote {} training and {} test images ({} px) to {} in {:.1} s",
        summary.train_rows,
        summary.test_rows,
        options.image_size,
        options.out.display(),
        started.elapsed().as_secs_f64()
    );
    for (class, count) in &summary.class_counts {
        println!("  {class:<22} {count:>6}");
    }
    if summary.defects > 0 {
        println!(
            "  plus {} defective files (zero-byte, truncated, not an image)",
            summary.defects
        );
    }
    if options.groups {
        println!("  {} videos in the video_id column", summary.videos);
    }
    if summary.test_rows > 0 {
        println!(
            "  the test labels are in {} (pass it as --test-truth to score the test set)",
            crate::synth::TEST_TRUTH_FILE
        );
    }
    Ok(ExitCode::SUCCESS)
}
