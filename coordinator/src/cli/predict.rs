//! `foldtrain predict`: a finished job's ensemble over new images, on this machine. Like
//! `run`, an in-process coordinator on loopback and local `foldtrain-worker` processes;
//! the images and the folds' weights go up as blobs, the images are cut into shards that
//! free worker slots take, and the CSVs are merged from the finished shards in input order.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use foldtrain_proto::config::MAX_BATCH_SIZE;
use foldtrain_proto::{BlobHash, ImageRef, JobConfig, ShardTask};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::{Instrument, field, info_span};

use super::CommandResult;
use super::cpu_layout::{self, Asked, FoldDemand, Machine, fold_peak_bytes};
use super::draw::Draw;
use super::local_args::LocalArgs;
use super::local_workers::{Layout, cuda_devices, worker_binary};
use super::progress::{Bar, UploadBar};
use super::run::LocalCluster;
use crate::client::upload_dataset;
use crate::dataset::{Dataset, Entry, ImageList, list_images};
use crate::predict::{
    DispatchOptions, GrpcShardRunner, Merged, ModelDir, ShardStore, cut_shards, dispatch,
};
use crate::scheduler::SlotTarget;

/// Images per shard unless `--shard-size` says otherwise.
const DEFAULT_SHARD_SIZE: usize = 2048;

/// Test-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tta {
    /// Average each image with its horizontal flip.
    Flip,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A finished job's results folder (what `foldtrain run --out` or `foldtrain results`
    /// writes): config.toml, probabilities.csv and folds/<k>/best.safetensors.
    #[arg(long, env = "FOLDTRAIN_MODEL")]
    pub model: PathBuf,
    /// Predict every image file under this folder, recursively.
    #[arg(long, env = "FOLDTRAIN_IMAGES", conflicts_with_all = ["images_csv", "images_dir"])]
    pub images: Option<PathBuf>,
    /// A CSV naming the images to predict (filename column), in `--images-dir`.
    #[arg(long, env = "FOLDTRAIN_IMAGES_CSV", requires = "images_dir")]
    pub images_csv: Option<PathBuf>,
    /// The folder the names of `--images-csv` are relative to.
    #[arg(long, env = "FOLDTRAIN_IMAGES_DIR", requires = "images_csv")]
    pub images_dir: Option<PathBuf>,
    /// Column of `--images-csv` holding the file name [default: filename].
    #[arg(long, env = "FOLDTRAIN_FILENAME_COLUMN")]
    pub filename_column: Option<String>,
    /// Directory for predictions.csv, probabilities.csv (and skipped.csv).
    #[arg(long, env = "FOLDTRAIN_OUT")]
    pub out: PathBuf,
    /// Images per forward pass [default: the training job's batch size].
    #[arg(
        long,
        env = "FOLDTRAIN_PREDICT_BATCH_SIZE",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH_SIZE))
    )]
    pub batch_size: Option<u32>,
    /// Test-time augmentation: `flip` averages each image with its horizontal flip.
    #[arg(long, value_enum, env = "FOLDTRAIN_TTA")]
    pub tta: Option<Tta>,
    /// Leave out images that cannot be decoded (listed in skipped.csv and on stderr)
    /// instead of stopping at the first.
    #[arg(long, env = "FOLDTRAIN_SKIP_BAD")]
    pub skip_bad: bool,
    /// Images per shard, the unit a worker slot takes (and retries when lost).
    #[arg(long, env = "FOLDTRAIN_SHARD_SIZE", default_value_t = DEFAULT_SHARD_SIZE)]
    pub shard_size: usize,
    #[command(flatten)]
    pub local: LocalArgs,
}

impl PredictArgs {
    fn image_list(&self) -> anyhow::Result<ImageList> {
        match (&self.images, &self.images_csv, &self.images_dir) {
            (Some(dir), None, None) => Ok(ImageList::Folder(dir.clone())),
            (None, Some(csv), Some(dir)) => Ok(ImageList::Csv {
                csv: csv.clone(),
                dir: dir.clone(),
                filename_column: self.filename_column.clone(),
            }),
            _ => bail!("no images given: pass --images DIR, or --images-csv F with --images-dir D"),
        }
    }
}

pub fn predict(args: PredictArgs) -> CommandResult {
    if args.shard_size == 0 {
        bail!("--shard-size must be at least 1");
    }
    let model = ModelDir::open(&args.model)?;
    let images = list_images(&args.image_list()?, &Bar::new())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(predict_locally(args, model, images))
}

async fn predict_locally(args: PredictArgs, model: ModelDir, images: Vec<Entry>) -> CommandResult {
    let started = Instant::now();
    let binary = worker_binary();
    let gpus = if args.local.cpu {
        0
    } else {
        cuda_devices(&binary).await?
    };
    let mut config = model.config.clone();
    let shards = images.len().div_ceil(args.shard_size);
    let (layout, announcement) = choose_layout(&mut config, &model, &args, gpus, shards);
    let draw = if args.local.quiet {
        Draw::Hidden
    } else {
        eprintln!("{announcement}");
        Draw::Stderr
    };
    let cluster = LocalCluster::start(&binary, &layout, args.local.data_dir.as_deref()).await?;
    let client = &cluster.client;
    let (weights, upload) = blobs(&model, images)?;
    upload_dataset(client, &upload, &UploadBar::new(draw)).await?;

    let slots: Vec<SlotTarget> = cluster
        .server
        .scheduler()
        .live_workers()
        .into_iter()
        .flat_map(|w| w.targets())
        .collect();
    let template = ShardTask {
        run_id: format!("predict-{}", std::process::id()),
        shard: 0,
        batch_size: args
            .batch_size
            .map_or(config.train.batch_size as usize, |b| b.max(1) as usize),
        config,
        class_names: model.class_names.clone(),
        fold_weights: weights,
        images: Vec::new(),
        device_index: None,
        tta_flip: args.tta == Some(Tta::Flip),
    };
    let refs: Vec<ImageRef> = upload.test.iter().map(ImageRef::from).collect();
    let total = refs.len() as u64;
    drop(upload);
    let shards = cut_shards(&template, refs, args.shard_size);
    let options = DispatchOptions {
        skip_bad: args.skip_bad,
        max_attempts: 3,
        done: Arc::new(AtomicU64::new(0)),
    };
    let mut store = ShardStore::new(cluster.state_dir.join("shards"), model.class_names.len());
    let bar = progress_bar(draw, total, options.done.clone());
    let scoring = Instant::now();
    let runner = Arc::new(GrpcShardRunner::default());
    // The prediction's trace: this root, a `shard_attempt` child per shard attempt and,
    // under each, the worker's `predict_shard`.
    let root = info_span!(
        "prediction",
        run = %template.run_id,
        images = total,
        shards = shards.len(),
        folds = template.fold_weights.len(),
        workers = slots.len(),
        images_per_second = field::Empty,
    );
    let scored = dispatch(runner, slots, &shards, &options, &mut store).instrument(root.clone());
    let outcome = tokio::select! {
        outcome = scored => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: stopping the workers");
            cluster.workers.stop().await;
            return Ok(ExitCode::from(130));
        }
    };
    bar.abort();
    let state = cluster.shutdown().await?;
    outcome?;
    let seconds = scoring.elapsed().as_secs_f64();
    root.record("images_per_second", total as f64 / seconds.max(1e-9));
    drop(root);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let merged = store.merge(&shards, &model.class_names, &args.out)?;
    drop(state);
    report(&merged, &args, total, seconds, started.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// The local workers, and a line saying what was chosen: one per visible GPU, else CPU
/// workers laid out as `run` lays out folds, with shards in the place of folds.
fn choose_layout(
    config: &mut JobConfig,
    model: &ModelDir,
    args: &PredictArgs,
    gpus: usize,
    shards: usize,
) -> (Layout, String) {
    if gpus > 0 {
        let layout = Layout::choose(gpus, args.local.workers);
        let line = format!("starting {} local GPU worker(s)", layout.len());
        return (layout, line);
    }
    // The threads the training job chose suited its machine and folds, not this run.
    config.train.torch_threads = 0;
    config.train.loader_threads = 0;
    let machine = Machine::this_one();
    let demand = FoldDemand {
        folds: shards as u32,
        peak_bytes: fold_peak_bytes(config, model.class_names.len(), args.shard_size),
    };
    let asked = Asked {
        workers: args.local.workers,
        ..Asked::default()
    };
    let chosen = cpu_layout::choose(machine, demand, asked);
    chosen.apply(config);
    let line = format!(
        "starting {} local CPU worker(s), {} thread(s) each, for {shards} shard(s) of up to {} images",
        chosen.workers, chosen.torch_threads, args.shard_size
    );
    (Layout::Cpu(chosen.workers), line)
}

/// The blobs to upload: the folds' weights (their hashes, in fold order) and the images.
fn blobs(model: &ModelDir, images: Vec<Entry>) -> anyhow::Result<(Vec<BlobHash>, Dataset)> {
    let mut weights = Vec::new();
    for (fold, path) in model.weights.iter().enumerate() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        weights.push(Entry {
            name: format!("folds/{fold}/best.safetensors"),
            path: path.clone(),
            label: None,
            group: None,
            size: bytes.len() as u64,
            hash: BlobHash::of(&bytes),
        });
    }
    let hashes = weights.iter().map(|w| w.hash).collect();
    let dataset = Dataset {
        classes: Vec::new(),
        train: weights,
        test: images,
        group_column: None,
    };
    Ok((hashes, dataset))
}

/// A bar of images scored (with images/s), redrawn from `done` until the task is aborted.
fn progress_bar(draw: Draw, total: u64, done: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let bar = ProgressBar::with_draw_target(Some(total), draw.target()).with_style(
        ProgressStyle::with_template(
            "predicting {bar:40} {pos}/{len} images ({per_sec}, eta {eta})",
        )
        .expect("the template is valid"),
    );
    tokio::spawn(async move {
        loop {
            bar.set_position(done.load(Ordering::Relaxed));
            if bar.position() >= total {
                bar.finish_and_clear();
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn report(merged: &Merged, args: &PredictArgs, total: u64, seconds: f64, elapsed: Duration) {
    if !merged.skipped.is_empty() {
        eprintln!(
            "skipped {} image(s) that could not be read (listed in {}):",
            merged.skipped.len(),
            args.out.join("skipped.csv").display()
        );
        for (name, message) in merged.skipped.iter().take(20) {
            eprintln!("  {name}: {message}");
        }
        if merged.skipped.len() > 20 {
            eprintln!("  ... and {} more", merged.skipped.len() - 20);
        }
    }
    println!(
        "predicted {} of {total} images in {seconds:.1} s ({:.1} images/s; {:.1} s in all); {} in {}",
        merged.predicted,
        total as f64 / seconds.max(1e-9),
        elapsed.as_secs_f64(),
        merged.files.join(", "),
        args.out.display()
    );
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        predict: PredictArgs,
    }

    fn parse(batch: &str) -> Result<Harness, clap::Error> {
        Harness::try_parse_from([
            "x",
            "--model",
            "m",
            "--images",
            "i",
            "--out",
            "o",
            "--batch-size",
            batch,
        ])
    }

    #[test]
    fn batch_size_is_bounded() {
        assert_eq!(parse("4096").unwrap().predict.batch_size, Some(4096));
        for bad in ["0", "4097"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("--batch-size") && err.contains("1..=4096"),
                "{bad}: {err}"
            );
        }
    }
}
