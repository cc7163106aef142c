//! One credential per role, on every RPC of both services: users may submit, watch,
//! cancel and download; workers may register, heartbeat and download blobs; and only the
//! coordinator a worker registered with may call that worker. Each RPC is called with no
//! credential, a wrong one, the other roles' and its own.

use foldtrain_proto::pb;
use foldtrain_proto::pb::coordinator_client::CoordinatorClient;
use foldtrain_proto::runtime::auth::BearerToken;
use foldtrain_tests::cluster::{Cluster, ClusterOptions};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

const USER: &str = "roles-user-token";
const WORKER: &str = "roles-worker-token";

/// The RPC names a .proto file declares, so an RPC added later cannot go untested.
fn rpcs(proto: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/foldtrain/v1")
        .join(proto);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap().trim().to_string())
        .collect()
}

type Coordinator = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

async fn coordinator(url: &str, token: Option<&str>) -> Coordinator {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    CoordinatorClient::with_interceptor(channel, BearerToken::new(token).unwrap())
}

/// Calls `method` with an empty request: the credential check comes before the request
/// is looked at, so what comes back says whether the caller got past it.
async fn call(client: &mut Coordinator, method: &str) -> Result<(), Status> {
    let empty = || pb::GetJobRequest::default();
    match method {
        "MissingBlobs" => client
            .missing_blobs(pb::MissingBlobsRequest::default())
            .await
            .map(drop),
        "UploadBlobs" => client
            .upload_blobs(tokio_stream::iter(Vec::<pb::BlobChunk>::new()))
            .await
            .map(drop),
        "DownloadBlobs" => client
            .download_blobs(pb::DownloadBlobsRequest::default())
            .await
            .map(drop),
        "SubmitJob" => client
            .submit_job(pb::SubmitJobRequest::default())
            .await
            .map(drop),
        "GetJob" => client.get_job(empty()).await.map(drop),
        "WatchJob" => client.watch_job(empty()).await.map(drop),
        "CancelJob" => client.cancel_job(empty()).await.map(drop),
        "ListJobs" => client
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .map(drop),
        "DownloadArtifact" => client
            .download_artifact(pb::DownloadArtifactRequest::default())
            .await
            .map(drop),
        "ListArtifacts" => client.list_artifacts(empty()).await.map(drop),
        "DeleteJob" => client.delete_job(empty()).await.map(drop),
        "RegisterWorker" => client
            .register_worker(pb::RegisterWorkerRequest::default())
            .await
            .map(drop),
        "Heartbeat" => client
            .heartbeat(pb::HeartbeatRequest::default())
            .await
            .map(drop),
        "ListWorkers" => client
            .list_workers(pb::ListWorkersRequest::default())
            .await
            .map(drop),
        other => panic!("no call for Coordinator.{other}: add it here with its role"),
    }
}

/// Whether the credential got past the gate (any answer but a refusal of it).
fn admitted(result: &Result<(), Status>) -> bool {
    !matches!(result, Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied))
}

fn code(result: &Result<(), Status>) -> Option<Code> {
    result.as_ref().err().map(Status::code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_takes_only_its_roles_credential() {
    let cluster = Cluster::start(
        1,
        ClusterOptions {
            token: Some(USER.into()),
            worker_token: Some(WORKER.into()),
            ..ClusterOptions::default()
        },
    )
    .await;
    let url = cluster.coordinator_url();
    let call_token = cluster.call_token(0);
    let workers_only = ["RegisterWorker", "Heartbeat", "DownloadBlobs"];
    // Workers ask which blobs are missing, to name an image the coordinator lacks.
    let both = ["MissingBlobs"];

    let methods = rpcs("coordinator.proto");
    assert_eq!(methods.len(), 14, "{methods:?}");
    for method in &methods {
        let (own, other) = if both.contains(&method.as_str()) {
            (USER, None)
        } else if workers_only.contains(&method.as_str()) {
            (WORKER, Some(USER))
        } else {
            (USER, Some(WORKER))
        };
        let outcome = |token: Option<&str>| {
            let url = url.clone();
            let token = token.map(String::from);
            async move {
                let mut client = coordinator(&url, token.as_deref()).await;
                call(&mut client, method).await
            }
        };
        let none = outcome(None).await;
        assert_eq!(
            code(&none),
            Some(Code::Unauthenticated),
            "{method} without a credential: {none:?}"
        );
        let wrong = outcome(Some("guessed")).await;
        assert_eq!(
            code(&wrong),
            Some(Code::Unauthenticated),
            "{method} with a guess: {wrong:?}"
        );
        let worker_secret = outcome(Some(&call_token)).await;
        assert_eq!(
            code(&worker_secret),
            Some(Code::Unauthenticated),
            "{method} with a worker's call token: {worker_secret:?}"
        );
        if let Some(other) = other {
            let other_role = outcome(Some(other)).await;
            assert_eq!(
                code(&other_role),
                Some(Code::PermissionDenied),
                "{method} with the other role's token: {other_role:?}"
            );
            let message = other_role.unwrap_err().message().to_string();
            assert!(message.starts_with(&format!("{method} needs")), "{message}");
        } else {
            let worker = outcome(Some(WORKER)).await;
            assert!(
                admitted(&worker),
                "{method} with the workers' token: {worker:?}"
            );
        }
        let right = outcome(Some(own)).await;
        assert!(
            admitted(&right),
            "{method} with its own role's token: {right:?}"
        );
    }

    // The worker's service: only its registration's call token, which only the
    // coordinator knows.
    let methods = rpcs("worker.proto");
    assert_eq!(methods.len(), 2, "{methods:?}");
    for method in &methods {
        for token in [
            None,
            Some("guessed"),
            Some(USER),
            Some(WORKER),
            Some(call_token.as_str()),
        ] {
            let mut worker = cluster.worker_client(0, token).await;
            let result = match method.as_str() {
                "TrainFold" => worker.train_fold(pb::FoldTask::default()).await.map(drop),
                "PredictShard" => worker
                    .predict_shard(pb::ShardTask::default())
                    .await
                    .map(drop),
                other => panic!("no call for Worker.{other}: add it here with its role"),
            };
            if token == Some(call_token.as_str()) {
                assert!(
                    admitted(&result),
                    "{method} with the call token: {result:?}"
                );
            } else {
                assert_eq!(
                    code(&result),
                    Some(Code::Unauthenticated),
                    "{method} with {token:?}: {result:?}"
                );
            }
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_cannot_be_taken_over_by_another_registration() {
    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let url = cluster.coordinator_url();
    let mut client = coordinator(&url, Some("cluster-worker-token")).await;
    let id = cluster.workers()[0].worker_id().to_string();
    // The workers' token is right, but the registration holding the id has another call
    // token: the id, its address and its folds stay with the real worker.
    let status = client
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: id.clone(),
            address: "http://127.0.0.1:9".into(),
            slots: vec![pb::Slot {
                device_index: -1,
                device_name: "cpu".into(),
            }],
            hostname: "impostor".into(),
            call_token: "impostor-secret".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&id), "{status:?}");
    let live = cluster.coordinator().scheduler().live_workers();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].address, "http://127.0.0.1:9");
    // A heartbeat under the id without its call token renews nothing.
    let known = client
        .heartbeat(pb::HeartbeatRequest {
            worker_id: id,
            busy_slots: 0,
            draining: true,
            call_token: "impostor-secret".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .known;
    assert!(!known);
    assert!(!cluster.coordinator().scheduler().live_workers()[0].draining);
    cluster.stop().await;
}
