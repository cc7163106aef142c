//! A worker refuses bad `TrainFold` calls clearly, and an attempt whose images the
//! coordinator lacks fails naming the image, without training.

use std::time::Duration;

use foldtrain_proto::pb::fold_event::Event;
use foldtrain_proto::{
    AttemptId, BlobHash, FailureCause, FoldIndex, FoldTask, ImageRef, JobConfig, JobId, pb,
};
use foldtrain_tests::cluster::{Cluster, ClusterOptions};
use tonic::Code;

fn image(name: &str, label: Option<u32>) -> ImageRef {
    ImageRef {
        hash: BlobHash::of(name.as_bytes()),
        name: name.into(),
        label,
        group: String::new(),
        size: name.len() as u64,
    }
}

/// A well-formed task whose images were never uploaded.
fn task() -> FoldTask {
    FoldTask {
        job_id: JobId::new("job-direct"),
        fold: FoldIndex(0),
        attempt: AttemptId(1),
        config: JobConfig::default(),
        class_names: vec!["a".into(), "b".into()],
        train: vec![
            image("train/never-uploaded.jpg", Some(0)),
            image("train/t2.jpg", Some(1)),
        ],
        val: vec![image("train/v1.jpg", Some(1))],
        test: vec![image("test/x1.jpg", None)],
        resume: None,
        pretrained: None,
        device_index: None,
    }
}

async fn refusal(cluster: &Cluster, token: Option<&str>, task: pb::FoldTask) -> tonic::Status {
    let mut worker = cluster.worker_client(0, token).await;
    match worker.train_fold(task).await {
        Ok(_) => panic!("the worker accepted a task it should refuse"),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_train_fold_calls_are_refused_clearly() {
    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let call_token = cluster.call_token(0);
    let token = Some(call_token.as_str());

    let mut empty_job = pb::FoldTask::from(&task());
    empty_job.job_id.clear();
    let status = refusal(&cluster, token, empty_job).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("job_id"), "{status:?}");

    let mut short_hash = pb::FoldTask::from(&task());
    short_hash.val[0].hash = vec![7; 5];
    let status = refusal(&cluster, token, short_hash).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("image.hash")
            && status.message().contains("train/v1.jpg")
            && status.message().contains("got 5"),
        "{status:?}"
    );

    let mut bad_resume = pb::FoldTask::from(&task());
    bad_resume.resume_blob = vec![1; 3];
    let status = refusal(&cluster, token, bad_resume).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("resume_blob"), "{status:?}");

    // Only the coordinator this worker registered with may call it: not a guess, not
    // nothing, and not the users' or the workers' tokens either.
    for wrong in [
        Some("not-the-token"),
        None,
        cluster.token(),
        Some("cluster-worker-token"),
    ] {
        let status = refusal(&cluster, wrong, pb::FoldTask::from(&task())).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{wrong:?}: {status:?}"
        );
    }

    let mut on_gpu = task();
    on_gpu.device_index = Some(3);
    let status = refusal(&cluster, token, pb::FoldTask::from(&on_gpu)).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        "worker worker-0 has no slot with device index 3; its slots are cpu (-1)"
    );
    assert_eq!(cluster.workers()[0].busy_slots(), 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_images_the_coordinator_lacks_fails_naming_one() {
    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let mut worker = cluster.worker_client(0, Some(&cluster.call_token(0))).await;
    let mut stream = worker
        .train_fold(pb::FoldTask::from(&task()))
        .await
        .expect("a well-formed task is accepted")
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the attempt ends promptly")
        .expect("the stream carries the failure as an event")
    {
        events.push(event);
    }
    let [event] = events.as_slice() else {
        panic!("expected exactly one event, got {events:?}");
    };
    assert_eq!(
        (event.job_id.as_str(), event.fold, event.attempt),
        ("job-direct", 0, 1)
    );
    let Some(Event::Error(error)) = &event.event else {
        panic!("expected an error event, got {event:?}");
    };
    assert_eq!(error.cause(), FailureCause::MissingBlob, "{error:?}");
    assert!(!error.retryable, "{error:?}");
    assert!(
        error.message.contains("train/never-uploaded.jpg")
            && error.message.contains("3 other image(s)"),
        "{}",
        error.message
    );
    let w = &cluster.workers()[0];
    assert_eq!((w.blobs_downloaded(), w.busy_slots()), (0, 0));
    cluster.stop().await;
}
