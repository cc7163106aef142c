//! Tests of the threaded loader with real JPEGs in a temporary folder.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::data::test_images::{encode_jpeg, textured_rgb};
use crate::data::{FolderSource, RgbImage, resize_square};

const SIZE: u32 = 8;

/// Wraps a source, counting fetches, optionally slowing them or panicking on one name.
struct CountingSource {
    inner: FolderSource,
    fetches: AtomicUsize,
    delay: Duration,
    panic_on: Option<String>,
}

impl BlobSource for CountingSource {
    fn fetch(&self, image: &ImageRef) -> Result<Vec<u8>, DataError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        if self.panic_on.as_deref() == Some(image.name.as_str()) {
            panic!("source bug on {}", image.name);
        }
        self.inner.fetch(image)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    source: Arc<CountingSource>,
    images: Arc<Vec<ImageRef>>,
}

fn fixture(count: usize, delay: Duration, panic_on: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let images = (0..count)
        .map(|i| {
            let name = format!("img_{i}.jpg");
            let bytes = encode_jpeg(&textured_rgb(20, 16, i as u32), 90);
            std::fs::write(dir.path().join(&name), &bytes).unwrap();
            ImageRef {
                hash: foldtrain_proto::BlobHash::of(&bytes),
                name,
                label: Some((i % 3) as u32),
                group: String::new(),
                size: bytes.len() as u64,
            }
        })
        .collect();
    let source = Arc::new(CountingSource {
        inner: FolderSource::new(dir.path()),
        fetches: AtomicUsize::new(0),
        delay,
        panic_on: panic_on.map(str::to_owned),
    });
    Fixture {
        _dir: dir,
        source,
        images: Arc::new(images),
    }
}

fn options(threads: usize, prefetch: usize, augment: Vec<Augment>) -> PipelineOptions {
    PipelineOptions {
        image_size: SIZE,
        resize: Resize::Bilinear,
        normalize: Normalize::Unit,
        augment,
        loader_threads: threads,
        prefetch_batches: prefetch,
    }
}

fn loader(f: &Fixture, options: PipelineOptions, cache_bytes: u64) -> Loader {
    Loader::new(
        f.source.clone(),
        f.images.clone(),
        options,
        Arc::new(ImageCache::new(cache_bytes)),
    )
}

fn collect(iter: BatchIter) -> Vec<Batch> {
    iter.collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn batches_come_in_order_with_the_decoded_pixels() {
    let f = fixture(10, Duration::ZERO, None);
    let order = crate::data::epoch_order(10, 1, 0, 0);
    let batches = collect(loader(&f, options(3, 2, vec![]), 0).batches(order.clone(), 4, None));
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        [4, 4, 2]
    );
    let indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(indices, order);

    // Each slot holds exactly the decoded, resized, scaled image of its index.
    let mut resizer = Resizer::new();
    let plane = (SIZE * SIZE) as usize;
    for batch in &batches {
        assert_eq!(batch.images.len(), batch.len() * 3 * plane);
        for (slot, &index) in batch.indices.iter().enumerate() {
            let image = &f.images[index];
            assert_eq!(batch.labels[slot], i64::from(image.label.unwrap()));
            let bytes = f.source.inner.fetch(image).unwrap();
            let decoded: RgbImage = crate::data::decode_rgb(&image.name, &bytes).unwrap();
            let pixels =
                resize_square(&image.name, &decoded, SIZE, Resize::Bilinear, &mut resizer).unwrap();
            let got = &batch.images[slot * 3 * plane..(slot + 1) * 3 * plane];
            for (p, px) in pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    assert_eq!(got[c * plane + p], f32::from(px[c]) / 255.0);
                }
            }
        }
    }

    let one_thread = collect(loader(&f, options(1, 1, vec![]), 0).batches(order, 4, None));
    assert_eq!(
        one_thread, batches,
        "thread count does not change the result"
    );
}

#[test]
fn second_epoch_is_served_from_the_cache() {
    let f = fixture(9, Duration::ZERO, None);
    let loader = loader(&f, options(2, 2, vec![]), 1 << 20);
    let first = collect(loader.batches(crate::data::epoch_order(9, 3, 0, 0), 4, None));
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 9);
    let second = collect(loader.batches(crate::data::epoch_order(9, 3, 0, 1), 4, None));
    assert_eq!(
        f.source.fetches.load(Ordering::SeqCst),
        9,
        "no fetch after the first epoch"
    );
    assert_eq!(second.iter().map(Batch::len).sum::<usize>(), 9);
    assert_ne!(first[0].indices, second[0].indices);
}

#[test]
fn images_beyond_the_budget_are_fetched_every_epoch() {
    let f = fixture(9, Duration::ZERO, None);
    let per_image = u64::from(SIZE * SIZE * 3);
    let cache = Arc::new(ImageCache::new(4 * per_image + per_image / 2));
    let loader = Loader::new(
        f.source.clone(),
        f.images.clone(),
        options(2, 2, vec![]),
        cache.clone(),
    );
    collect(loader.batches((0..9).collect(), 3, None));
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes), (4, 4 * per_image));
    assert!(stats.bytes <= stats.budget);
    collect(loader.batches((0..9).collect(), 3, None));
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 9 + 5);
}

#[test]
fn a_corrupt_image_is_a_named_non_retryable_error_and_ends_the_epoch() {
    let f = fixture(6, Duration::ZERO, None);
    let dir = f._dir.path();
    let bytes = std::fs::read(dir.join("img_4.jpg")).unwrap();
    std::fs::write(dir.join("img_4.jpg"), &bytes[..bytes.len() / 3]).unwrap();
    let results: Vec<_> = loader(&f, options(2, 2, vec![]), 0)
        .batches((0..6).collect(), 2, None)
        .collect();
    assert_eq!(
        results.len(),
        3,
        "two good batches, then the error, then the end"
    );
    assert!(results[0].is_ok() && results[1].is_ok());
    let err = results[2].as_ref().unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("img_4.jpg"), "{err}");
    assert!(!err.retryable());
}

#[test]
fn a_missing_file_is_retryable() {
    let f = fixture(3, Duration::ZERO, None);
    std::fs::remove_file(f._dir.path().join("img_1.jpg")).unwrap();
    let err = loader(&f, options(1, 1, vec![]), 0)
        .batches((0..3).collect(), 3, None)
        .find_map(Result::err)
        .unwrap();
    assert!(err.retryable(), "{err}");
    assert!(err.to_string().contains("img_1.jpg"), "{err}");
}

#[test]
fn a_panicking_source_is_an_error_not_a_hang() {
    let f = fixture(6, Duration::ZERO, Some("img_3.jpg"));
    let results: Vec<_> = loader(&f, options(2, 2, vec![]), 0)
        .batches((0..6).collect(), 2, None)
        .collect();
    let err = results.last().unwrap().as_ref().unwrap_err();
    assert!(
        matches!(err, DataError::LoaderPanic { batch: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("source bug on img_3.jpg"), "{err}");
}

#[test]
fn bad_arguments_are_errors() {
    let f = fixture(2, Duration::ZERO, None);
    let mut zero_batch = loader(&f, options(1, 1, vec![]), 0).batches(vec![0, 1], 0, None);
    assert!(matches!(
        zero_batch.next(),
        Some(Err(DataError::InvalidOption {
            option: "batch_size",
            ..
        }))
    ));
    assert!(zero_batch.next().is_none());
    let err = loader(&f, options(1, 1, vec![]), 0)
        .batches(vec![0, 7], 2, None)
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, DataError::IndexOutOfRange { index: 7, len: 2 }),
        "{err}"
    );
    assert_eq!(
        loader(&f, options(1, 1, vec![]), 0)
            .batches(Vec::new(), 2, None)
            .count(),
        0
    );
}

#[test]
fn prefetch_is_bounded_and_dropping_stops_the_threads() {
    let f = fixture(40, Duration::from_millis(5), None);
    let mut iter = loader(&f, options(2, 3, vec![]), 0).batches((0..40).collect(), 1, None);
    // Without a consumer, the pool builds at most the window (3 batches of one image).
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 3);
    iter.next().unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 4);

    let started = Instant::now();
    drop(iter);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "drop joins promptly"
    );
    let after_drop = f.source.fetches.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        f.source.fetches.load(Ordering::SeqCst),
        after_drop,
        "no work after drop"
    );
}

#[test]
fn augmentation_is_reproducible_and_only_with_a_seed() {
    let f = fixture(8, Duration::ZERO, None);
    let all = vec![Augment::Hflip, Augment::Vflip, Augment::Rot90];
    let loader = loader(&f, options(2, 2, all.clone()), 1 << 20);
    let order: Vec<usize> = (0..8).collect();
    let plain = collect(loader.batches(order.clone(), 8, None));
    let a = collect(loader.batches(order.clone(), 8, Some(5)));
    let b = collect(loader.batches(order.clone(), 8, Some(5)));
    let c = collect(loader.batches(order.clone(), 8, Some(6)));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, plain);

    // Each augmented image is its plain image moved by the chosen flips and turns.
    let table = NormalizeTable::new(Normalize::Unit);
    let image_floats = (3 * SIZE * SIZE) as usize;
    for (slot, &index) in order.iter().enumerate() {
        let choice = choose_augment(&all, 5, index);
        let image = &f.images[index];
        let pixels = loader
            .cache
            .get(&image.hash, &image.name, SIZE, Resize::Bilinear)
            .unwrap();
        let mut expected = vec![0f32; image_floats];
        table.write_chw(&pixels, SIZE as usize, choice, &mut expected);
        assert_eq!(
            &a[0].images[slot * image_floats..(slot + 1) * image_floats],
            &expected[..]
        );
    }
}
