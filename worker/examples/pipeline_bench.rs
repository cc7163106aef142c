//! Input pipeline throughput: JPEG folder to normalised float batches with no cache
//! (the first-epoch cost).
//! Usage: pipeline_bench <image dir> <loader threads> [size] [batch] [repeats] [nearest|bilinear]

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use foldtrain_proto::config::{Normalize, Resize};
use foldtrain_proto::{BlobHash, ImageRef};
use foldtrain_worker::data::{FolderSource, ImageCache, Loader, PipelineOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!(
            "usage: pipeline_bench <image dir> <loader threads> [size] [batch] [repeats] [nearest|bilinear]"
        );
    }
    let dir = std::path::PathBuf::from(&args[0]);
    let threads: usize = args[1].parse().context("loader threads")?;
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(default), |s| {
            s.parse().with_context(|| format!("argument {i}: {s}"))
        })
    };
    let (size, batch_size, repeats) = (arg(2, 229)?, arg(3, 32)?, arg(4, 3)?);
    let resize = match args.get(5).map_or("nearest", String::as_str) {
        "nearest" => Resize::Nearest,
        "bilinear" => Resize::Bilinear,
        other => bail!("argument 5: resize must be nearest or bilinear, got {other:?}"),
    };

    let mut images = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    for name in names {
        let bytes = std::fs::read(dir.join(&name))?;
        images.push(ImageRef {
            hash: BlobHash::of(&bytes),
            size: bytes.len() as u64,
            name,
            label: Some(0),
            group: String::new(),
        });
    }
    if images.is_empty() {
        bail!("no .jpg files in {}", dir.display());
    }
    let count = images.len();
    let images = Arc::new(images);
    let options = PipelineOptions {
        image_size: size as u32,
        resize,
        normalize: Normalize::Unit,
        augment: Vec::new(),
        loader_threads: threads,
        prefetch_batches: threads * 2,
    };
    let mut best = 0f64;
    for _ in 0..repeats {
        // A zero budget: every image is fetched and decoded, as in a first epoch.
        let loader = Loader::new(
            Arc::new(FolderSource::new(&dir)),
            images.clone(),
            options.clone(),
            Arc::new(ImageCache::new(0)),
        );
        let start = Instant::now();
        let mut checksum = 0f64;
        for batch in loader.batches((0..count).collect(), batch_size, None) {
            let batch = batch?;
            checksum += f64::from(batch.images[0]);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let rate = count as f64 / elapsed;
        best = best.max(rate);
        println!(
            "foldtrain {resize:?} {threads} thread(s): {count} images in {elapsed:.3}s = {rate:.1} img/s, {:.1} img/s/core (checksum {checksum:.2})",
            rate / threads as f64
        );
    }
    println!("foldtrain best: {:.1} img/s/core", best / threads as f64);
    Ok(())
}
