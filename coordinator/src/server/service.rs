//! The `Coordinator` gRPC service: thin handlers that convert, delegate to the store
//! and the scheduler, and map errors to status codes.

use std::pin::Pin;
use std::time::Duration;

use foldtrain_proto::runtime::propagation::adopt_trace_context;
use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::{JobId, ProtoError, WorkerId, pb};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, field, info_span};

use super::{artifacts, blobs, convert, metrics, status};
use crate::error::CoordinatorError;
use crate::scheduler::{CallToken, Direction, Registration, Scheduler};
use crate::store;

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The coordinator's gRPC service.
#[derive(Clone)]
pub struct CoordinatorService {
    scheduler: Scheduler,
    uploads: blobs::UploadLimits,
}

impl CoordinatorService {
    /// The service over `scheduler`, with the default upload limits.
    pub fn new(scheduler: Scheduler) -> Self {
        Self {
            scheduler,
            uploads: blobs::UploadLimits::default(),
        }
    }

    /// Sets what one UploadBlobs stream may send.
    pub fn with_upload_limits(mut self, limits: blobs::UploadLimits) -> Self {
        self.uploads = limits;
        self
    }
}

fn terminal(status: &pb::JobStatus) -> bool {
    status.state().is_terminal()
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for CoordinatorService {
    async fn missing_blobs(
        &self,
        request: Request<pb::MissingBlobsRequest>,
    ) -> Result<Response<pb::MissingBlobsResponse>, Status> {
        let hashes = convert::hashes("hashes", &request.into_inner().hashes)?;
        let blobs = self.scheduler.store().blobs.clone();
        let missing = tokio::task::spawn_blocking(move || blobs.missing(&hashes))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::MissingBlobsResponse {
            missing: missing.into_iter().map(|h| h.0.to_vec()).collect(),
        }))
    }

    async fn upload_blobs(
        &self,
        request: Request<tonic::Streaming<pb::BlobChunk>>,
    ) -> Result<Response<pb::UploadBlobsResponse>, Status> {
        let (metadata, _, chunks) = request.into_parts();
        let span = info_span!("receive_blobs", blobs = field::Empty, bytes = field::Empty);
        adopt_trace_context(&span, &metadata);
        let received = blobs::receive(&self.scheduler.store().blobs, self.uploads, chunks)
            .instrument(span.clone())
            .await;
        match &received {
            // As i64: tracing-opentelemetry exports u64 fields as strings.
            Ok((count, bytes)) => {
                span.record("blobs", *count as i64);
                span.record("bytes", *bytes as i64);
            }
            Err(e) => mark_span_failed(&span, e),
        }
        let (blobs, bytes) = received?;
        self.scheduler
            .metrics()
            .streamed(Direction::Upload, bytes as usize);
        Ok(Response::new(pb::UploadBlobsResponse { blobs, bytes }))
    }

    type DownloadBlobsStream = RpcStream<pb::BlobChunk>;

    async fn download_blobs(
        &self,
        request: Request<pb::DownloadBlobsRequest>,
    ) -> Result<Response<Self::DownloadBlobsStream>, Status> {
        let (metadata, _, message) = request.into_parts();
        let hashes = convert::hashes("hashes", &message.hashes)?;
        // A worker's request carries its fold's trace: the transfer shows up in the job.
        let span = info_span!("serve_blobs", blobs = hashes.len(), bytes = field::Empty);
        adopt_trace_context(&span, &metadata);
        let rx = span.in_scope(|| blobs::send(&self.scheduler.store().blobs, hashes))?;
        let chunks =
            metrics::count_sent(rx, &self.scheduler, Direction::Download, |c| c.data.len());
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let spec = convert::job_spec(request.into_inner())?;
        let id = self.scheduler.submit(spec).await?;
        Ok(Response::new(pb::SubmitJobResponse {
            job_id: id.to_string(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let id = convert::job_id(&request.into_inner().job_id)?;
        Ok(Response::new(
            status::job_status(&self.scheduler, &id).await?,
        ))
    }

    type WatchJobStream = RpcStream<pb::JobUpdate>;

    async fn watch_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = convert::job_id(&request.into_inner().job_id)?;
        // Subscribe first so nothing between the first status and the stream is missed.
        let events = self.scheduler.subscribe();
        let first = status::job_status(&self.scheduler, &id).await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(watch(self.scheduler.clone(), id, first, events, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let id = convert::job_id(&request.into_inner().job_id)?;
        self.scheduler.cancel(&id).await?;
        Ok(Response::new(
            status::job_status(&self.scheduler, &id).await?,
        ))
    }

    async fn delete_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let id = convert::job_id(&request.into_inner().job_id)?;
        let deleted = self.scheduler.delete_job(&id).await?;
        Ok(Response::new(pb::DeleteJobResponse {
            job_id: id.to_string(),
            blobs_removed: deleted.blobs_removed,
            bytes_freed: deleted.bytes_freed,
            blobs_kept: deleted.blobs_kept,
        }))
    }

    async fn list_jobs(
        &self,
        _request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self
            .scheduler
            .store()
            .db
            .call(|c| store::jobs::list_jobs(c))
            .await?;
        let jobs = jobs
            .iter()
            .map(|j| {
                let mut s = status::summary_status(j);
                if let Some(state) = self.scheduler.live_job_state(&j.id) {
                    s.set_state(state);
                }
                s
            })
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    type DownloadArtifactStream = RpcStream<pb::ArtifactChunk>;

    async fn download_artifact(
        &self,
        request: Request<pb::DownloadArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        let request = request.into_inner();
        let id = self.known_job(&request.job_id).await?;
        let dir = self.scheduler.store().job_dir(&id);
        let path = artifacts::resolve(&id, &dir, &request.path)?;
        let rx = artifacts::stream(path).await?;
        let chunks =
            metrics::count_sent(rx, &self.scheduler, Direction::Artifact, |c| c.data.len());
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn list_artifacts(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::ListArtifactsResponse>, Status> {
        let id = self.known_job(&request.into_inner().job_id).await?;
        let dir = self.scheduler.store().job_dir(&id);
        let paths = tokio::task::spawn_blocking(move || artifacts::list(&dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::ListArtifactsResponse { paths }))
    }

    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let r = request.into_inner();
        if r.worker_id.is_empty() {
            return Err(ProtoError::MissingField("worker_id").into());
        }
        if r.address.is_empty() {
            return Err(ProtoError::MissingField("address").into());
        }
        if r.call_token.is_empty() {
            return Err(ProtoError::MissingField("call_token").into());
        }
        let registration = Registration {
            id: WorkerId::new(r.worker_id),
            address: r.address,
            call_token: CallToken::new(r.call_token),
            hostname: r.hostname,
            slots: r
                .slots
                .into_iter()
                .map(|s| (s.device_index, s.device_name))
                .collect(),
        };
        let lease = self.scheduler.register_worker(registration).await?;
        Ok(Response::new(pb::RegisterWorkerResponse {
            lease_ms: lease.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        if r.worker_id.is_empty() {
            return Err(ProtoError::MissingField("worker_id").into());
        }
        let known = self
            .scheduler
            .heartbeat(
                &WorkerId::new(r.worker_id),
                &CallToken::new(r.call_token),
                r.draining,
            )
            .await?;
        Ok(Response::new(pb::HeartbeatResponse { known }))
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let live = self.scheduler.live_workers();
        let stored = self
            .scheduler
            .store()
            .db
            .call(|c| store::workers::list_workers(c))
            .await?;
        let mut workers: Vec<pb::WorkerStatus> = live
            .iter()
            .map(|w| status::worker_status(w, true))
            .collect();
        for w in stored
            .into_iter()
            .filter(|w| !live.iter().any(|l| l.id == w.id))
        {
            workers.push(pb::WorkerStatus {
                worker_id: w.id.to_string(),
                address: w.address,
                slots: w
                    .slots
                    .into_iter()
                    .map(|(device_index, device_name)| pb::Slot {
                        device_index,
                        device_name,
                    })
                    .collect(),
                busy_slots: 0,
                alive: false,
                last_seen_unix_ms: w.last_seen_ms,
            });
        }
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }
}

impl CoordinatorService {
    /// The job id of a request, checked to name a stored job.
    async fn known_job(&self, raw: &str) -> Result<JobId, CoordinatorError> {
        let id = convert::job_id(raw)?;
        let check = id.clone();
        self.scheduler
            .store()
            .db
            .call(move |c| store::jobs::job_summary(c, &check))
            .await?;
        Ok(id)
    }
}

/// Sends a job's status on every event that concerns it, and at least once a second
/// while it runs, until it ends or the client goes away.
async fn watch(
    scheduler: Scheduler,
    id: JobId,
    first: pb::JobStatus,
    mut events: broadcast::Receiver<crate::scheduler::JobEvent>,
    tx: mpsc::Sender<Result<pb::JobUpdate, Status>>,
) {
    let done = terminal(&first);
    let update = |status, fold, epoch| pb::JobUpdate {
        status: Some(status),
        fold,
        epoch,
    };
    if tx.send(Ok(update(first, None, None))).await.is_err() || done {
        return;
    }
    loop {
        let (fold, epoch) = tokio::select! {
            () = tx.closed() => return,
            event = tokio::time::timeout(Duration::from_secs(1), events.recv()) => match event {
                Ok(Ok(e)) if e.job == id => (e.fold.map(|f| f.0), e.epoch.map(Into::into)),
                Ok(Ok(_)) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
                // Lagged or quiet: a fresh status catches the watcher up.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => (None, None),
            },
        };
        let status = match status::job_status(&scheduler, &id).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let done = terminal(&status);
        if tx.send(Ok(update(status, fold, epoch))).await.is_err() || done {
            return;
        }
    }
}
