//! The real launcher: calls `Worker.TrainFold` over gRPC and turns the chunked wire
//! events back into whole domain events.

use std::time::Duration;

use foldtrain_proto::FailureCause;
use foldtrain_proto::config::MAX_HEAD_UNITS;
use foldtrain_proto::pb::worker_client::WorkerClient;
use foldtrain_proto::runtime::tls::secure_endpoint;
use foldtrain_proto::task::FoldFailure;
use foldtrain_proto::wire_events::FoldEventAssembler;
use foldtrain_proto::{
    AttemptId, BlobHash, CONNECTION_WINDOW, FoldEvent, FoldIndex, FoldTask, JobId,
    MAX_MESSAGE_SIZE, ProtoError, STREAM_WINDOW, WorkerId, pb,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument;

use super::launcher::{CallToken, FoldEventStream, FoldLauncher, SlotTarget};
use crate::error::{CoordinatorError, Result};

/// Resume checkpoints up to this size travel inside the task; larger ones are named by
/// hash and the worker downloads them from the coordinator's blob store.
pub const INLINE_RESUME_LIMIT: usize = 16 * 1024 * 1024;

/// Most bytes one payload of a worker's stream (a checkpoint, a fold's probabilities) may
/// reach before the attempt is ended. A DenseNet121 checkpoint with Adam's two moments is
/// about 3 x 32 MB, the widest head `model.head_units` allows adds about 200 MB, and 50k
/// test rows of 14 classes are under 3 MB: 1 GiB leaves ample headroom.
pub const MAX_EVENT_PAYLOAD: u64 = 1 << 30;

// DenseNet121's 8 million parameters and the widest head's dense layer, each with Adam's
// two moments, in f32: a checkpoint must fit with at least half the limit to spare.
const _: () = assert!(
    3 * (8_000_000 + 1024 * MAX_HEAD_UNITS as u64) * 4 < MAX_EVENT_PAYLOAD / 2,
    "MAX_EVENT_PAYLOAD no longer holds the largest checkpoint with headroom"
);

/// Most payloads a worker's stream may have begun and not finished at once. An honest
/// worker sends one payload after another; there are four kinds (best and latest
/// checkpoints, out-of-fold and test probabilities).
pub const MAX_OPEN_PAYLOADS: usize = 4;

/// Launches attempts on workers over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcLauncher {
    /// How to verify workers and what to present to them; None: cleartext only.
    tls: Option<ClientTlsConfig>,
    max_message_size: usize,
    connect_timeout: Duration,
    max_payload: u64,
    max_open_payloads: usize,
}

impl GrpcLauncher {
    /// A launcher that calls workers in cleartext, presenting each worker's call token.
    pub fn new() -> Self {
        Self {
            tls: None,
            max_message_size: MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(10),
            max_payload: MAX_EVENT_PAYLOAD,
            max_open_payloads: MAX_OPEN_PAYLOADS,
        }
    }

    /// Sets the largest gRPC message sent to or accepted from a worker.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Calls `https://` workers with this configuration; `http://` workers are then
    /// refused, so no task travels in cleartext by mistake.
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Sets what a worker's stream may make the coordinator hold: `bytes` per payload and
    /// `open` payloads begun and not finished (defaults: [`MAX_EVENT_PAYLOAD`] and
    /// [`MAX_OPEN_PAYLOADS`]). A stream past either ends its attempt.
    pub fn with_payload_limits(mut self, bytes: u64, open: usize) -> Self {
        self.max_payload = bytes;
        self.max_open_payloads = open;
        self
    }
}

/// Who an event must come from: anything else is stale or misrouted.
#[derive(Debug, Clone)]
struct Expected {
    job: JobId,
    fold: FoldIndex,
    attempt: AttemptId,
    worker: WorkerId,
}

impl FoldLauncher for GrpcLauncher {
    fn launch(&self, target: &SlotTarget, task: FoldTask) -> FoldEventStream {
        let mut wire = pb::FoldTask::from(&task);
        if let Some(resume) = &task.resume
            && resume.len() > INLINE_RESUME_LIMIT
        {
            wire.resume_blob = BlobHash::of(resume).0.to_vec();
            wire.resume_checkpoint = Vec::new();
        }
        let mut request = tonic::Request::new(wire);
        foldtrain_proto::runtime::propagation::inject_trace_context(
            &tracing::Span::current(),
            request.metadata_mut(),
        );
        let expected = Expected {
            job: task.job_id.clone(),
            fold: task.fold,
            attempt: task.attempt,
            worker: target.worker.clone(),
        };
        let (tx, rx) = mpsc::channel(8);
        let launcher = self.clone();
        let address = target.address.clone();
        let call_token = target.call_token.clone();
        tokio::spawn(
            async move {
                let result = match authorize(&mut request, &call_token) {
                    Ok(()) => launcher.pump(&address, request, &expected, &tx).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    let _ = tx.send(Err(e)).await;
                }
            }
            .instrument(tracing::Span::current()),
        );
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }
}

/// Adds the worker's call token to a request for it: the one credential it accepts.
pub(crate) fn authorize<T>(request: &mut tonic::Request<T>, call_token: &CallToken) -> Result<()> {
    if call_token.as_str().is_empty() {
        return Ok(());
    }
    let value = format!("Bearer {}", call_token.as_str())
        .parse()
        .map_err(|_| {
            CoordinatorError::InvalidArgument(
                "a worker's call token contains characters not allowed in a header".into(),
            )
        })?;
    request.metadata_mut().insert("authorization", value);
    Ok(())
}

impl Default for GrpcLauncher {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcLauncher {
    /// A client of the worker at `address` (`host:port` or a URL); the error says why not.
    pub(crate) async fn connect(
        &self,
        address: &str,
    ) -> std::result::Result<WorkerClient<Channel>, String> {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("bad address {url:?}: {e}"))?
            .connect_timeout(self.connect_timeout)
            // Keepalives notice a vanished worker even while it sends nothing.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let endpoint =
            secure_endpoint(endpoint, &url, self.tls.as_ref()).map_err(|e| e.to_string())?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(WorkerClient::new(channel)
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size))
    }

    /// Streams one attempt's events into `tx` until the worker ends it or `tx` closes.
    async fn pump(
        &self,
        address: &str,
        request: tonic::Request<pb::FoldTask>,
        expected: &Expected,
        tx: &mpsc::Sender<Result<FoldEvent>>,
    ) -> Result<()> {
        let lost = |message: String| CoordinatorError::WorkerStream {
            worker: expected.worker.clone(),
            message,
        };
        let mut client = self.connect(address).await.map_err(lost)?;
        let mut stream = match client.train_fold(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return reject_or_lose(status, expected, tx).await,
        };
        let mut assembler = FoldEventAssembler::new()
            .with_max_payload(self.max_payload)
            .with_max_open_payloads(self.max_open_payloads);
        loop {
            let message = tokio::select! {
                // The attempt was abandoned: dropping the stream cancels the call.
                () = tx.closed() => return Ok(()),
                message = stream.message() => message,
            };
            let event = match message {
                Ok(Some(event)) => event,
                // The scheduler treats an end without `Done` as a lost worker.
                Ok(None) => return Ok(()),
                Err(status) => return reject_or_lose(status, expected, tx).await,
            };
            if event.job_id != expected.job.as_str()
                || event.fold != expected.fold.0
                || event.attempt != expected.attempt.0
            {
                return Err(CoordinatorError::StaleAttempt {
                    job: JobId::new(event.job_id),
                    fold: FoldIndex(event.fold),
                    attempt: AttemptId(event.attempt),
                    current: format!(
                        "{} of fold {} of job {}",
                        expected.attempt, expected.fold, expected.job
                    ),
                });
            }
            if let Some(event) = assembler.push(event).map_err(|e| match e {
                ProtoError::LimitExceeded { .. } => lost(format!("stream over its limits: {e}")),
                e => lost(format!("malformed event: {e}")),
            })? && tx.send(Ok(event)).await.is_err()
            {
                return Ok(());
            }
        }
    }
}

/// A worker that refuses the task itself (bad task, wrong token) will refuse it again:
/// that fails the job. Anything else (unavailable, reset) counts as a lost worker.
async fn reject_or_lose(
    status: tonic::Status,
    expected: &Expected,
    tx: &mpsc::Sender<Result<FoldEvent>>,
) -> Result<()> {
    use tonic::Code;
    let permanent = matches!(
        status.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
    );
    let message = format!("{:?}: {}", status.code(), status.message());
    if permanent {
        let failure = FoldFailure::new(
            FailureCause::Rejected,
            format!("worker {} rejected the task: {message}", expected.worker),
        );
        let _ = tx.send(Ok(FoldEvent::Failed(failure))).await;
        return Ok(());
    }
    Err(CoordinatorError::WorkerStream {
        worker: expected.worker.clone(),
        message,
    })
}
