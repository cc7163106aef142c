//! One job is one trace across processes: the real `foldtrain serve` and two
//! `foldtrain-worker` processes export over OTLP/gRPC to an in-process receiver, and the
//! spans they send form job -> fold_attempt -> train_fold -> epoch -> evaluate.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use foldtrain_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan, services};
use foldtrain_tests::traced_job::TracedJob;

const COORDINATOR: &str = "foldtrain-coordinator";
const WORKER: &str = "foldtrain-worker";

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn a_job_is_one_trace_across_coordinator_and_workers() {
    let receiver = OtlpReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = TracedJob {
        endpoint: receiver.endpoint(),
        // The second worker samples a batch span for every batch; the first has none.
        workers: vec![vec![], vec!["--batch-span-every".into(), "1".into()]],
        folds: 2,
        epochs: 2,
        service_attribute: None,
    };
    let run = job.run(dir.path()).unwrap();

    // Every process flushed before it exited; give the last export a moment to land.
    let spans = receiver.wait_for(Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "job") && named(spans, "epoch").len() >= 4
    });
    let context = || {
        let mut names: Vec<String> = spans
            .iter()
            .map(|s| format!("{}:{}", s.service, s.name))
            .collect();
        names.sort();
        names.dedup();
        format!(
            "received {} spans {names:?}\n{}",
            spans.len(),
            run.log_tails()
        )
    };

    let jobs: Vec<&ReceivedSpan> = named(&spans, "job")
        .into_iter()
        .filter(|s| s.attr_text("job") == run.job_id)
        .collect();
    assert_eq!(jobs.len(), 1, "one job span: {}", context());
    let root = jobs[0];
    assert_eq!(root.service, COORDINATOR);
    assert!(root.parent_span_id.is_empty(), "the job span is a root");
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let by_id: HashMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let parent = |s: &ReceivedSpan| by_id.get(s.parent_span_id.as_str()).copied();

    // Both services in the one trace, and only the job's spans in it.
    let in_trace: Vec<ReceivedSpan> = trace.iter().map(|s| (*s).clone()).collect();
    assert_eq!(
        services(&in_trace),
        BTreeSet::from([COORDINATOR.to_string(), WORKER.to_string()]),
        "{}",
        context()
    );
    for name in [
        "fold_attempt",
        "train_fold",
        "epoch",
        "evaluate",
        "predict",
        "batch",
    ] {
        for s in named(&spans, name) {
            assert_eq!(
                s.trace_id, root.trace_id,
                "{name} span outside the job's trace"
            );
        }
    }

    // job -> fold_attempt, one per fold, with who ran it and where.
    let attempts = named(&spans, "fold_attempt");
    assert_eq!(attempts.len(), 2, "{}", context());
    let folds: BTreeSet<String> = attempts.iter().map(|a| a.attr_text("fold")).collect();
    assert_eq!(folds, BTreeSet::from(["0".to_string(), "1".to_string()]));
    for a in &attempts {
        assert_eq!(a.service, COORDINATOR);
        assert_eq!(a.parent_span_id, root.span_id, "fold_attempt under job");
        assert_eq!(a.attr_text("job"), run.job_id);
        assert_eq!(a.attr_text("device"), "cpu");
        assert!(a.attr_text("worker").starts_with("traced-worker-"), "{a:?}");
        assert!(a.attr("attempt").is_some(), "{a:?}");
    }

    // fold_attempt -> train_fold, across the process boundary.
    let trainings = named(&spans, "train_fold");
    assert_eq!(trainings.len(), 2, "{}", context());
    for t in &trainings {
        assert_eq!(t.service, WORKER);
        let a = parent(t).unwrap_or_else(|| panic!("train_fold without parent: {t:?}"));
        assert_eq!(a.name, "fold_attempt");
        assert_eq!(a.attr_text("fold"), t.attr_text("fold"));
        assert_eq!(a.attr_text("attempt"), t.attr_text("attempt"));
        assert_eq!(t.attr_text("device"), "cpu");
    }

    // train_fold -> epoch, with the epoch's metrics; epoch -> evaluate.
    let epochs = named(&spans, "epoch");
    assert_eq!(epochs.len(), 4, "2 folds x 2 epochs: {}", context());
    for e in &epochs {
        assert_eq!(parent(e).map(|p| p.name.as_str()), Some("train_fold"));
        for key in ["loss", "val_loss", "images_per_sec"] {
            let v = e.attr(key).and_then(|a| a.as_f64());
            assert!(v.is_some_and(|v| v.is_finite() && v >= 0.0), "{key}: {e:?}");
        }
        let f1 = e.attr("val_f1").and_then(|a| a.as_f64()).unwrap();
        assert!((0.0..=1.0).contains(&f1), "val_f1 is a macro-F1: {e:?}");
        assert!(
            e.events.iter().any(|ev| ev == "latest checkpoint saved"),
            "checkpoints are span events: {e:?}"
        );
    }
    let evaluations = named(&spans, "evaluate");
    assert_eq!(evaluations.len(), 4);
    assert!(
        evaluations
            .iter()
            .all(|s| parent(s).is_some_and(|p| p.name == "epoch"))
    );
    let predictions = named(&spans, "predict");
    assert_eq!(predictions.len(), 2);
    assert!(
        predictions
            .iter()
            .all(|s| parent(s).is_some_and(|p| p.name == "train_fold"))
    );

    // Blob transfers, checkpoint uploads and aggregation are in the job's trace too: the
    // coordinator's serve_blobs adopts the worker's download request as its parent.
    for s in named(&spans, "serve_blobs") {
        let p = parent(s).unwrap_or_else(|| panic!("serve_blobs without parent: {s:?}"));
        assert_eq!(
            (p.service.as_str(), p.name.as_str()),
            (WORKER, "download_blobs")
        );
    }
    let pulls = named(&spans, "pull_blobs");
    assert_eq!(pulls.len(), 2, "{}", context());
    assert!(
        pulls
            .iter()
            .all(|s| parent(s).is_some_and(|p| p.name == "train_fold"))
    );
    assert!(
        !named(&spans, "serve_blobs").is_empty(),
        "each worker's cache starts empty, so blobs were served: {}",
        context()
    );
    let stored = named(&spans, "store_checkpoint");
    assert!(
        stored.len() >= 4
            && stored
                .iter()
                .all(|s| parent(s).is_some_and(|p| p.name == "fold_attempt")),
        "{}",
        context()
    );
    let finalize = named(&spans, "finalize");
    assert_eq!(finalize.len(), 1);
    assert_eq!(finalize[0].parent_span_id, root.span_id);
    assert!(
        named(&spans, "aggregate")
            .iter()
            .any(|s| s.parent_span_id == finalize[0].span_id)
    );
    let uploads = named(&spans, "receive_blobs");
    assert!(
        uploads
            .iter()
            .any(|s| s.attr_text("bytes").parse::<u64>().is_ok_and(|b| b > 0)),
        "client uploads at the coordinator have spans: {uploads:?}"
    );

    // Batch spans: only from the worker that asked for them, and only inside an epoch.
    for b in named(&spans, "batch") {
        let epoch = parent(b).expect("batch under epoch");
        assert_eq!(epoch.name, "epoch");
        let training = parent(epoch).expect("epoch under train_fold");
        assert_eq!(training.attr_text("worker"), "traced-worker-1", "{b:?}");
    }
    let sampled_worker_trained = trainings
        .iter()
        .any(|t| t.attr_text("worker") == "traced-worker-1");
    assert_eq!(
        sampled_worker_trained,
        !named(&spans, "batch").is_empty(),
        "batch spans exist exactly when the sampling worker trained: {}",
        context()
    );

    // Nothing failed, so nothing is marked as an error.
    let failed: Vec<&ReceivedSpan> = trace
        .iter()
        .copied()
        .filter(|s| s.status_code == 2)
        .collect();
    assert!(
        failed.is_empty(),
        "error spans in a successful job: {failed:?}"
    );
}

/// `foldtrain run` logs only warnings by default; its coordinator's spans must still be
/// exported, and its local workers must join the same trace. The exporters keep their
/// default 5 s batch delay, longer than this job: the workers' spans arrive only because
/// `run` stops them with SIGTERM and they flush on the way out.
#[test]
fn foldtrain_run_exports_one_trace_with_quiet_logs() {
    let receiver = OtlpReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dataset = foldtrain_tests::procs::synth(&dir.path().join("data"), 48, 4, 24, 2);
    let mut run = std::process::Command::new(foldtrain_tests::binary("foldtrain"));
    run.arg("run")
        .args(&dataset)
        .args(foldtrain_tests::procs::tiny_job(2, 1))
        .args(["--workers", "1", "--cpu", "--quiet", "--out"])
        .arg(dir.path().join("out"))
        .env(
            "FOLDTRAIN_WORKER_BIN",
            foldtrain_tests::binary("foldtrain-worker"),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env_remove("OTEL_BSP_SCHEDULE_DELAY")
        .env_remove("RUST_LOG")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES");
    foldtrain_tests::procs::ok(&mut run);

    let spans = receiver.wait_for(Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "job") && named(spans, "train_fold").len() >= 2
    });
    let jobs = named(&spans, "job");
    assert_eq!(jobs.len(), 1, "{:?}", services(&spans));
    let trace = &jobs[0].trace_id;
    let attempts: BTreeSet<&str> = named(&spans, "fold_attempt")
        .iter()
        .filter(|s| &s.trace_id == trace)
        .map(|s| s.span_id.as_str())
        .collect();
    assert_eq!(attempts.len(), 2, "{:?}", services(&spans));
    let trainings = named(&spans, "train_fold");
    assert_eq!(
        trainings.len(),
        2,
        "the local workers' spans never arrived: {:?}",
        services(&spans)
    );
    for t in trainings {
        assert_eq!(t.service, WORKER);
        assert_eq!(&t.trace_id, trace, "train_fold left the job's trace");
        assert!(
            attempts.contains(t.parent_span_id.as_str()),
            "train_fold's parent is no fold_attempt"
        );
    }

    // The job's ensemble over its test images, on two workers in shards of one image: one
    // trace, prediction -> shard_attempt -> the worker's predict_shard.
    let data = dir.path().join("data");
    let mut predict = std::process::Command::new(foldtrain_tests::binary("foldtrain"));
    predict
        .arg("predict")
        .arg("--model")
        .arg(dir.path().join("out"))
        .arg("--images")
        .arg(data.join("test"))
        .args(["--workers", "2", "--shard-size", "1", "--cpu", "--quiet"])
        .arg("--out")
        .arg(dir.path().join("predicted"));
    // The same environment as the run: set and removed alike.
    for (key, value) in run.get_envs() {
        match value {
            Some(value) => predict.env(key, value),
            None => predict.env_remove(key),
        };
    }
    foldtrain_tests::procs::ok(&mut predict);
    let spans = receiver.wait_for(Duration::from_secs(10), |spans| {
        spans.iter().any(|s| s.name == "prediction") && named(spans, "predict_shard").len() >= 4
    });
    let roots = named(&spans, "prediction");
    assert_eq!(roots.len(), 1, "{:?}", services(&spans));
    let root = roots[0];
    assert_eq!(root.service, COORDINATOR);
    assert!(root.parent_span_id.is_empty(), "the prediction is a root");
    assert_eq!(root.attr_text("images"), "4");
    assert!(
        root.attr("images_per_second")
            .and_then(|a| a.as_f64())
            .is_some_and(|r| r > 0.0),
        "images/s on the root: {root:?}"
    );
    let shard_attempts: BTreeSet<&str> = named(&spans, "shard_attempt")
        .iter()
        .filter(|s| s.parent_span_id == root.span_id && s.trace_id == root.trace_id)
        .map(|s| s.span_id.as_str())
        .collect();
    assert_eq!(shard_attempts.len(), 4, "one attempt per shard");
    let scored = named(&spans, "predict_shard");
    assert_eq!(
        scored.len(),
        4,
        "the workers' spans: {:?}",
        services(&spans)
    );
    for s in scored {
        assert_eq!(s.service, WORKER);
        assert_eq!(s.trace_id, root.trace_id, "predict_shard left the trace");
        assert!(
            shard_attempts.contains(s.parent_span_id.as_str()),
            "predict_shard's parent is no shard_attempt"
        );
    }
}
