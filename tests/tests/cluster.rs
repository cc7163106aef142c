//! A whole job on an in-process cluster (one coordinator, two workers, real training):
//! the results contract holds, and a second job on the same data moves no blobs.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use foldtrain_coordinator::dataset::Dataset;
use foldtrain_coordinator::split::dataset_folds;
use foldtrain_proto::config::Arch;
use foldtrain_proto::metrics::{ConfusionMatrix, argmax_rows};
use foldtrain_proto::{AttemptState, JobConfig, JobState};
use foldtrain_tests::cluster::{Cluster, ClusterOptions, synth_dataset};

const FOLDS: u32 = 3;

fn job_config(epochs: u32) -> JobConfig {
    let mut config = JobConfig::default();
    config.split.folds = FOLDS;
    config.model.arch = Arch::DensenetTiny;
    config.model.head_units = 32;
    let t = &mut config.train;
    t.epochs = epochs;
    t.image_size = 32;
    t.batch_size = 16;
    // Two folds train at once on a small machine: one thread each keeps them from
    // fighting over the cores.
    t.torch_threads = 1;
    t.loader_threads = 1;
    // Every epoch checkpoints, so the tests see each one stored.
    t.checkpoint_interval_s = 0;
    config
}

/// A CSV file as a header and rows of strings.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn floats(cells: &[String]) -> Vec<f32> {
    cells.iter().map(|c| c.parse::<f32>().unwrap()).collect()
}

fn class_index(dataset: &Dataset, name: &str) -> u32 {
    dataset
        .classes
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("unknown class {name:?}")) as u32
}

fn check_probabilities_are_the_fold_mean(dataset: &Dataset, out: &Path) {
    let (header, rows) = read_csv(&out.join("probabilities.csv"));
    let mut expected_header = vec!["filename".to_string()];
    expected_header.extend(dataset.classes.iter().cloned());
    assert_eq!(header, expected_header);
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let test_names: Vec<&str> = dataset.test.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names, test_names,
        "probabilities.csv rows in test input order"
    );
    let folds: Vec<Vec<Vec<String>>> = (0..FOLDS)
        .map(|k| read_csv(&out.join(format!("folds/{k}/probabilities.csv"))).1)
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mean = floats(&row[1..]);
        for (c, &value) in mean.iter().enumerate() {
            let fold_mean = folds
                .iter()
                .map(|f| f64::from(f[i][c + 1].parse::<f32>().unwrap()))
                .sum::<f64>()
                / f64::from(FOLDS);
            assert!(
                (f64::from(value) - fold_mean).abs() < 1e-6,
                "{} class {}: {value} vs fold mean {fold_mean}",
                row[0],
                dataset.classes[c]
            );
        }
    }
}

fn check_predictions_are_the_argmax(dataset: &Dataset, out: &Path) {
    let (_, probabilities) = read_csv(&out.join("probabilities.csv"));
    let (header, predictions) = read_csv(&out.join("predictions.csv"));
    assert_eq!(header, ["filename", "label"]);
    assert_eq!(predictions.len(), dataset.test.len());
    let classes = dataset.classes.len();
    for ((prediction, probs), entry) in predictions.iter().zip(&probabilities).zip(&dataset.test) {
        assert_eq!(
            prediction[0], entry.name,
            "predictions.csv in test input order"
        );
        let best = argmax_rows(&floats(&probs[1..]), classes)[0];
        assert_eq!(
            prediction[1], dataset.classes[best as usize],
            "{}",
            entry.name
        );
    }
}

/// Checks oof.csv against the split `foldtrain split` computes; returns (label, predicted).
fn check_oof_covers_every_row_once(
    dataset: &Dataset,
    config: &JobConfig,
    out: &Path,
) -> (Vec<u32>, Vec<u32>) {
    let (header, rows) = read_csv(&out.join("oof.csv"));
    assert_eq!(header[..4], ["filename", "label", "fold", "predicted"]);
    assert_eq!(header[4..], dataset.classes[..]);
    let expected_folds =
        dataset_folds(dataset, FOLDS, config.split.shuffle, config.split.seed).unwrap();
    assert_eq!(rows.len(), dataset.train.len(), "one oof row per train row");
    let names: BTreeSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names.len(), rows.len(), "no train row twice in oof.csv");
    let (mut labels, mut predicted) = (Vec::new(), Vec::new());
    for ((row, entry), fold) in rows.iter().zip(&dataset.train).zip(&expected_folds) {
        assert_eq!(row[0], entry.name, "oof.csv in train input order");
        assert_eq!(row[1], dataset.label_name(entry).unwrap(), "{}", entry.name);
        assert_eq!(row[2], fold.to_string(), "fold of {}", entry.name);
        let best = argmax_rows(&floats(&row[4..]), dataset.classes.len())[0];
        assert_eq!(row[3], dataset.classes[best as usize], "{}", entry.name);
        labels.push(class_index(dataset, &row[1]));
        predicted.push(best);
    }
    (labels, predicted)
}

fn check_metrics_match_the_oof_table(
    dataset: &Dataset,
    out: &Path,
    labels: &[u32],
    predicted: &[u32],
) {
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let oof = &metrics["oof"];
    let cm = ConfusionMatrix::new(dataset.classes.len(), labels, predicted);
    let close = |key: &str, value: f64| {
        let reported = oof[key]
            .as_f64()
            .unwrap_or_else(|| panic!("oof.{key} missing"));
        assert!(
            (reported - value).abs() < 1e-9,
            "oof.{key}: {reported} vs {value}"
        );
    };
    close("accuracy", cm.accuracy());
    close("macro_f1", cm.macro_f1());
    close("mcc", cm.mcc());
    assert_eq!(oof["rows"].as_u64(), Some(dataset.train.len() as u64));
    let matrix: Vec<Vec<u64>> = serde_json::from_value(oof["confusion_matrix"].clone()).unwrap();
    assert_eq!(matrix, cm.matrix);
    assert_eq!(metrics["folds"].as_array().unwrap().len(), FOLDS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_train_a_job_and_a_second_job_moves_no_blobs() {
    let started = Instant::now();
    let cluster = Cluster::start(2, ClusterOptions::default()).await;
    let data_dir = cluster.scratch("data");
    let dataset = tokio::task::spawn_blocking(move || synth_dataset(&data_dir, 57, 12, 20, FOLDS))
        .await
        .unwrap();
    let config = job_config(2);

    let first = cluster.submit(&dataset, &config, "first").await;
    assert_eq!(first.uploaded, dataset.train.len() + dataset.test.len());
    let status = cluster
        .wait_for_job(&first.job_id, Duration::from_secs(240))
        .await;
    assert_eq!(status.state(), JobState::Succeeded, "{status:#?}");
    eprintln!("first job done after {:?}", started.elapsed());

    let mut folds_per_worker: HashMap<String, usize> = HashMap::new();
    for fold in &status.folds {
        let done = fold
            .attempts
            .iter()
            .filter(|a| a.state() == AttemptState::Succeeded);
        for attempt in done {
            *folds_per_worker
                .entry(attempt.worker_id.clone())
                .or_default() += 1;
        }
    }
    for worker in cluster.workers() {
        assert!(
            folds_per_worker
                .get(worker.worker_id())
                .copied()
                .unwrap_or(0)
                >= 1,
            "worker {} trained no fold: {folds_per_worker:?}",
            worker.worker_id()
        );
        assert!(
            worker.blobs_downloaded() > 0,
            "{} downloaded nothing",
            worker.worker_id()
        );
    }

    let out = cluster.scratch("results");
    let paths = cluster.download_results(&first.job_id, &out).await;
    for required in [
        "predictions.csv",
        "probabilities.csv",
        "oof.csv",
        "metrics.json",
        "config.toml",
    ] {
        assert!(
            paths.iter().any(|p| p == required),
            "{required} missing from {paths:?}"
        );
    }
    check_probabilities_are_the_fold_mean(&dataset, &out);
    check_predictions_are_the_argmax(&dataset, &out);
    let (labels, predicted) = check_oof_covers_every_row_once(&dataset, &config, &out);
    check_metrics_match_the_oof_table(&dataset, &out, &labels, &predicted);

    // The same images again: nothing to upload, nothing for the workers to download.
    let downloaded: Vec<u64> = cluster
        .workers()
        .iter()
        .map(|w| w.blobs_downloaded())
        .collect();
    let second = cluster.submit(&dataset, &job_config(1), "second").await;
    assert_eq!(
        second.uploaded, 0,
        "re-submitting the same data uploads nothing"
    );
    let status = cluster
        .wait_for_job(&second.job_id, Duration::from_secs(240))
        .await;
    assert_eq!(status.state(), JobState::Succeeded, "{status:#?}");
    let after: Vec<u64> = cluster
        .workers()
        .iter()
        .map(|w| w.blobs_downloaded())
        .collect();
    assert_eq!(after, downloaded, "the second job's folds downloaded blobs");

    cluster.stop().await;
    eprintln!("cluster test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_training_when_the_caller_drops_the_stream() {
    use foldtrain_proto::{AttemptId, FoldIndex, FoldTask, ImageRef, JobId, pb};

    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let data_dir = cluster.scratch("data");
    let dataset = tokio::task::spawn_blocking(move || synth_dataset(&data_dir, 57, 4, 20, FOLDS))
        .await
        .unwrap();
    let client = cluster.client().await;
    foldtrain_tests::cluster::upload_missing(&client, &dataset).await;
    let refs = |entries: &[foldtrain_coordinator::dataset::Entry]| -> Vec<ImageRef> {
        entries.iter().map(ImageRef::from).collect()
    };
    // Far more epochs than the test could wait for, and no early stop: only
    // cancellation frees the slot.
    let mut config = job_config(1000);
    config.train.early_stopping_patience = 1000;
    let task = FoldTask {
        job_id: JobId::new("job-abandoned"),
        fold: FoldIndex(0),
        attempt: AttemptId(1),
        config,
        class_names: dataset.classes.clone(),
        train: refs(&dataset.train[..40]),
        val: refs(&dataset.train[40..]),
        test: refs(&dataset.test),
        resume: None,
        pretrained: None,
        device_index: None,
    };
    let mut worker = cluster.worker_client(0, Some(&cluster.call_token(0))).await;
    let mut stream = worker
        .train_fold(pb::FoldTask::from(&task))
        .await
        .expect("the task is accepted")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("training reports within a minute")
        .expect("a healthy stream")
        .expect("an event");
    assert!(first.event.is_some(), "{first:?}");
    let w = &cluster.workers()[0];
    assert_eq!(w.busy_slots(), 1);
    assert_eq!(
        w.blobs_downloaded(),
        (dataset.train.len() + dataset.test.len()) as u64
    );

    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.busy_slots() > 0 {
        assert!(
            Instant::now() < deadline,
            "training went on after the caller left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop().await;
}
