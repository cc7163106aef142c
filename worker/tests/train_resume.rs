//! A fold stopped after its first epoch and resumed from the latest checkpoint ends
//! bit-identical (on the CPU) to an uninterrupted run: weights, optimizer moments, best
//! weights, and the out-of-fold and test probabilities.

use std::sync::Arc;

use foldtrain_proto::config::{Arch, Augment, JobConfig};
use foldtrain_proto::task::{CheckpointKind, FoldSummary};
use foldtrain_proto::{
    AttemptId, BlobHash, FailureCause, FoldEvent, FoldIndex, FoldTask, ImageRef, JobId,
};
use foldtrain_worker::data::FolderSource;
use foldtrain_worker::train::checkpoint::{ResumeState, decode};
use foldtrain_worker::train::{
    EventSink, FoldControl, RunOptions, SinkClosed, TrainError, run_fold,
};

const CLASSES: u32 = 3;

/// Folds seed libtorch's global generator before drawing their initial weights, so two
/// folds starting at once could interleave their draws: these tests run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Class 0: a bright square, class 1: horizontal stripes, class 2: a checkerboard; each
/// image shifted and tinted by its index so no two are alike.
fn pattern(class: u32, i: u32) -> image::RgbImage {
    image::RgbImage::from_fn(32, 32, |x, y| {
        let (sx, sy) = ((x + i) % 32, (y + 2 * i) % 32);
        let on = match class {
            0 => (8..24).contains(&sx) && (8..24).contains(&sy),
            1 => (sy / 4) % 2 == 0,
            _ => ((sx / 4) + (sy / 4)) % 2 == 0,
        };
        let tint = (i * 37 % 60) as u8;
        if on {
            image::Rgb([200 - tint, 60 + tint, 40 * class as u8])
        } else {
            image::Rgb([20, 20 + tint, 30])
        }
    })
}

fn write_images(dir: &std::path::Path, prefix: &str, count: u32, labelled: bool) -> Vec<ImageRef> {
    (0..count)
        .map(|i| {
            let class = i % CLASSES;
            let name = format!("{prefix}{i:02}.png");
            pattern(class, i).save(dir.join(&name)).unwrap();
            ImageRef {
                hash: BlobHash::of(name.as_bytes()),
                name,
                label: labelled.then_some(class),
                group: String::new(),
                size: 0,
            }
        })
        .collect()
}

fn task(dir: &std::path::Path) -> FoldTask {
    let mut config = JobConfig::default();
    config.model.arch = Arch::DensenetTiny;
    config.model.head_units = 16;
    config.train.image_size = 32;
    config.train.batch_size = 8;
    config.train.epochs = 3;
    config.train.augment = vec![Augment::Hflip, Augment::Rot90];
    config.train.loader_threads = 2;
    config.train.torch_threads = 1;
    config.train.cache_bytes = 1 << 20;
    config.train.checkpoint_interval_s = 0;
    FoldTask {
        job_id: JobId::new("resume-test"),
        fold: FoldIndex(1),
        attempt: AttemptId(1),
        config,
        class_names: vec!["square".into(), "stripes".into(), "checker".into()],
        train: write_images(dir, "train", 30, true),
        val: write_images(dir, "val", 9, true),
        test: write_images(dir, "test", 5, false),
        resume: None,
        pretrained: None,
        device_index: None,
    }
}

/// Records events and cancels the fold once the latest checkpoint of `stop_after` arrives.
struct StoppingSink {
    events: Vec<FoldEvent>,
    stop_after: u32,
    control: Arc<FoldControl>,
}

impl EventSink for StoppingSink {
    fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
        if let FoldEvent::Checkpoint {
            kind: CheckpointKind::Latest,
            epoch,
            ..
        } = &event
            && *epoch == self.stop_after
        {
            self.control.cancel();
        }
        self.events.push(event);
        Ok(())
    }
}

/// Records events and asks the fold to drain once training reports `(epoch, batch)`, as a
/// worker does on SIGTERM.
struct DrainingSink {
    events: Vec<FoldEvent>,
    at: (u32, u32),
    control: Arc<FoldControl>,
}

impl EventSink for DrainingSink {
    fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
        if let FoldEvent::Progress { epoch, batch, .. } = &event
            && (*epoch, *batch) == self.at
        {
            self.control.drain();
        }
        self.events.push(event);
        Ok(())
    }
}

fn latest(events: &[FoldEvent], want: u32) -> Vec<u8> {
    events
        .iter()
        .find_map(|e| match e {
            FoldEvent::Checkpoint {
                kind: CheckpointKind::Latest,
                epoch,
                bytes,
            } if *epoch == want => Some(bytes.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no latest checkpoint for epoch {want}"))
}

fn probs(events: &[FoldEvent]) -> (Vec<f32>, Vec<f32>) {
    let oof = events.iter().find_map(|e| match e {
        FoldEvent::Oof { probs, .. } => Some(probs.clone()),
        _ => None,
    });
    let test = events.iter().find_map(|e| match e {
        FoldEvent::Test { probs, .. } => Some(probs.clone()),
        _ => None,
    });
    (oof.expect("an Oof event"), test.expect("a Test event"))
}

/// The state without wall-clock fields, which legitimately differ between runs.
fn timeless(mut state: ResumeState) -> ResumeState {
    for r in &mut state.history {
        r.images_per_sec = 0.0;
        r.seconds = 0.0;
        r.val_seconds = 0.0;
        r.checkpoint_seconds = 0.0;
    }
    state
}

fn assert_same_checkpoint(a: &[u8], b: &[u8]) {
    let (sa, ta) = decode(a).unwrap();
    let (sb, tb) = decode(b).unwrap();
    assert_eq!(timeless(sa), timeless(sb));
    let mut names: Vec<&String> = ta.keys().collect();
    names.sort();
    assert_eq!(names.len(), tb.len());
    assert!(names.iter().any(|n| n.starts_with("model.features.")));
    assert!(names.iter().any(|n| n.ends_with("running_var")));
    assert!(names.iter().any(|n| n.starts_with("best.")));
    assert!(names.iter().any(|n| n.starts_with("adam.v.")));
    for name in names {
        let (x, y) = (
            &ta[name],
            &tb.get(name).unwrap_or_else(|| panic!("{name} missing")),
        );
        assert_eq!(x.size(), y.size(), "{name}");
        // Bitwise: compare the raw bytes, so even NaN payloads or -0.0 would count.
        let bx = Vec::<u8>::try_from(&x.flatten(0, -1).view_dtype(tch::Kind::Uint8)).unwrap();
        let by = Vec::<u8>::try_from(&y.flatten(0, -1).view_dtype(tch::Kind::Uint8)).unwrap();
        assert!(bx == by, "tensor {name} differs");
    }
}

fn summary(events: &[FoldEvent]) -> FoldSummary {
    match events.last() {
        Some(FoldEvent::Done(s)) => *s,
        other => panic!("last event is not Done: {other:?}"),
    }
}

/// The fold trained start to end: its events and summary.
fn uninterrupted(task: &FoldTask, source: &Arc<FolderSource>) -> (Vec<FoldEvent>, FoldSummary) {
    let mut events = Vec::new();
    let summary = run_fold(
        task,
        source.clone(),
        &mut events,
        &FoldControl::default(),
        RunOptions::default(),
    )
    .unwrap();
    (events, summary)
}

#[test]
fn resumed_fold_is_bit_identical_to_an_uninterrupted_one() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    let source = Arc::new(FolderSource::new(dir.path()));
    let never = FoldControl::default();
    let (full, summary_full) = uninterrupted(&task, &source);
    let epochs: Vec<u32> = full
        .iter()
        .filter_map(|e| {
            if let FoldEvent::Epoch(r) = e {
                Some(r.epoch)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3]);
    assert_eq!(summary(&full), summary_full);
    assert!(
        full.iter()
            .any(|e| matches!(e, FoldEvent::Progress { phase: "train", .. }))
    );
    assert!(full.iter().any(|e| matches!(
        e,
        FoldEvent::Checkpoint {
            kind: CheckpointKind::Best,
            ..
        }
    )));

    // Stop right after epoch 1's latest checkpoint.
    let control = FoldControl::new();
    let mut stopping = StoppingSink {
        events: Vec::new(),
        stop_after: 1,
        control: control.clone(),
    };
    let err = run_fold(
        &task,
        source.clone(),
        &mut stopping,
        &control,
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Cancelled { fold: 1 }), "{err}");
    assert!(
        matches!(stopping.events.last(), Some(FoldEvent::Failed(f)) if f.cause == FailureCause::Cancelled && !f.retryable())
    );
    let after_one = latest(&stopping.events, 1);
    assert_same_checkpoint(&after_one, &latest(&full, 1));

    let mut resumed_task = task.clone();
    resumed_task.resume = Some(after_one);
    let mut resumed: Vec<FoldEvent> = Vec::new();
    let summary_resumed = run_fold(
        &resumed_task,
        source,
        &mut resumed,
        &never,
        RunOptions::default(),
    )
    .unwrap();
    let epochs: Vec<u32> = resumed
        .iter()
        .filter_map(|e| {
            if let FoldEvent::Epoch(r) = e {
                Some(r.epoch)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(epochs, [2, 3]);
    assert_eq!(summary_resumed, summary_full);
    assert_same_checkpoint(&latest(&resumed, 3), &latest(&full, 3));
    let (oof_a, test_a) = probs(&full);
    let (oof_b, test_b) = probs(&resumed);
    assert_eq!(oof_a.len(), 9 * CLASSES as usize);
    assert_eq!(test_a.len(), 5 * CLASSES as usize);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&oof_a), bits(&oof_b));
    assert_eq!(bits(&test_a), bits(&test_b));
    for row in oof_a.chunks(CLASSES as usize) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn a_fold_drained_mid_epoch_resumes_at_its_next_batch_bit_identical() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    let source = Arc::new(FolderSource::new(dir.path()));
    let never = FoldControl::default();
    let (full, summary_full) = uninterrupted(&task, &source);

    // 30 images in batches of 8: four batches an epoch; the drain lands after the second
    // batch of epoch 2.
    let every_batch = RunOptions {
        progress_every: 1,
        ..RunOptions::default()
    };
    let mut draining = DrainingSink {
        events: Vec::new(),
        at: (2, 2),
        control: FoldControl::new(),
    };
    let control = draining.control.clone();
    let err = run_fold(&task, source.clone(), &mut draining, &control, every_batch).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Drained {
                fold: 1,
                epoch: 2,
                batches_done: 2
            }
        ),
        "{err}"
    );
    let n = draining.events.len();
    let Some(FoldEvent::Failed(failure)) = draining.events.last() else {
        panic!("no verdict after the drain: {:?}", draining.events.last());
    };
    assert_eq!(failure.cause, FailureCause::WorkerStopping);
    assert!(failure.retryable() && !failure.cause.uses_retry_budget());
    let FoldEvent::Checkpoint {
        kind: CheckpointKind::Latest,
        epoch: 1,
        bytes: handed_back,
    } = &draining.events[n - 2]
    else {
        panic!(
            "no checkpoint before the verdict: {:?}",
            draining.events[n - 2]
        );
    };
    let (state, _) = decode(handed_back).unwrap();
    let partial = state
        .partial_epoch
        .expect("the checkpoint records the epoch in progress");
    assert_eq!(
        (state.epochs_done, partial.epoch, partial.batches_done),
        (1, 2, 2)
    );
    assert_eq!(partial.meter.rows(), 16);

    let mut resumed_task = task.clone();
    resumed_task.resume = Some(handed_back.clone());
    let mut resumed: Vec<FoldEvent> = Vec::new();
    let summary_resumed =
        run_fold(&resumed_task, source, &mut resumed, &never, every_batch).unwrap();
    let first_progress = resumed.iter().find_map(|e| match e {
        FoldEvent::Progress { epoch, batch, .. } => Some((*epoch, *batch)),
        _ => None,
    });
    assert_eq!(
        first_progress,
        Some((2, 3)),
        "the resumed fold starts at batch 3 of epoch 2"
    );
    assert_eq!(summary_resumed, summary_full);
    assert_same_checkpoint(&latest(&resumed, 3), &latest(&full, 3));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let ((oof_a, test_a), (oof_b, test_b)) = (probs(&full), probs(&resumed));
    assert_eq!(bits(&oof_a), bits(&oof_b));
    assert_eq!(bits(&test_a), bits(&test_b));
}

#[test]
fn a_corrupt_image_fails_the_fold_as_bad_image() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut task = task(dir.path());
    task.config.train.epochs = 1;
    std::fs::write(dir.path().join(&task.train[4].name), b"not an image").unwrap();
    let mut events: Vec<FoldEvent> = Vec::new();
    let never = FoldControl::default();
    let err = run_fold(
        &task,
        Arc::new(FolderSource::new(dir.path())),
        &mut events,
        &never,
        RunOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        (err.cause().as_str(), err.retryable()),
        ("bad_image", false),
        "{err}"
    );
    match events.last() {
        Some(FoldEvent::Failed(f)) => assert!(f.message.contains("train04.png"), "{}", f.message),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn a_checkpoint_of_another_fold_is_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut task = task(dir.path());
    task.config.train.epochs = 1;
    let never = FoldControl::default();
    let source = Arc::new(FolderSource::new(dir.path()));
    let mut events: Vec<FoldEvent> = Vec::new();
    run_fold(
        &task,
        source.clone(),
        &mut events,
        &never,
        RunOptions::default(),
    )
    .unwrap();
    let mut other = task.clone();
    other.fold = FoldIndex(2);
    other.resume = Some(latest(&events, 1));
    let err = run_fold(
        &other,
        source,
        &mut Vec::new(),
        &never,
        RunOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        (err.cause().as_str(), err.retryable()),
        ("bad_checkpoint", false),
        "{err}"
    );
    assert!(err.to_string().contains("fold"), "{err}");
}
