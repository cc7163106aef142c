//! The real shard runner: calls `Worker.PredictShard` over gRPC and turns the streamed
//! rows back into [`ShardUpdate`]s.

use foldtrain_proto::{ShardTask, pb};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::dispatch::{RowOutcome, ShardFailure, ShardRunner, ShardUpdate, ShardUpdates};
use crate::scheduler::{CallToken, GrpcLauncher, SlotTarget, authorize};

/// Runs shards on workers over gRPC, with the launcher's connection settings, presenting
/// each worker's call token.
#[derive(Debug, Clone, Default)]
pub struct GrpcShardRunner {
    launcher: GrpcLauncher,
}

impl GrpcShardRunner {
    pub fn new(launcher: GrpcLauncher) -> Self {
        Self { launcher }
    }
}

impl ShardRunner for GrpcShardRunner {
    fn run(&self, slot: &SlotTarget, mut task: ShardTask) -> ShardUpdates {
        task.device_index = u32::try_from(slot.device_index).ok();
        // The caller's span (the shard attempt) parents the worker's `predict_shard`.
        let mut request = tonic::Request::new(pb::ShardTask::from(&task));
        foldtrain_proto::runtime::propagation::inject_trace_context(
            &tracing::Span::current(),
            request.metadata_mut(),
        );
        let (tx, rx) = mpsc::channel(8);
        let launcher = self.launcher.clone();
        let address = slot.address.clone();
        let call_token = slot.call_token.clone();
        tokio::spawn(async move {
            if let Err(failure) = pump(&launcher, &address, &call_token, request, &task, &tx).await
            {
                let _ = tx.send(Err(failure)).await;
            }
        });
        ReceiverStream::new(rx).boxed()
    }
}

async fn pump(
    launcher: &GrpcLauncher,
    address: &str,
    call_token: &CallToken,
    mut request: tonic::Request<pb::ShardTask>,
    task: &ShardTask,
    tx: &mpsc::Sender<Result<ShardUpdate, ShardFailure>>,
) -> Result<(), ShardFailure> {
    authorize(&mut request, call_token).map_err(|e| ShardFailure {
        message: e.to_string(),
        retryable: false,
        lost: false,
    })?;
    let mut client = launcher
        .connect(address)
        .await
        .map_err(ShardFailure::lost)?;
    let mut stream = client
        .predict_shard(request)
        .await
        .map_err(status_failure)?
        .into_inner();
    loop {
        let event = tokio::select! {
            // The prediction stopped: dropping the stream cancels the call.
            () = tx.closed() => return Ok(()),
            message = stream.message() => message.map_err(status_failure)?,
        };
        let Some(event) = event else {
            return Err(ShardFailure::lost(
                "the worker ended the shard without a verdict",
            ));
        };
        let update = match event.event {
            Some(pb::shard_event::Event::Rows(rows)) => ShardUpdate::Rows(
                rows.rows
                    .into_iter()
                    .map(|row| row_outcome(row, task.class_names.len()))
                    .collect::<Result<_, _>>()?,
            ),
            Some(pb::shard_event::Event::Done(_)) => ShardUpdate::Done,
            Some(pb::shard_event::Event::Error(e)) => {
                return Err(ShardFailure {
                    message: e.message,
                    retryable: e.retryable,
                    lost: false,
                });
            }
            None => continue,
        };
        let done = update == ShardUpdate::Done;
        if tx.send(Ok(update)).await.is_err() || done {
            return Ok(());
        }
    }
}

/// One streamed row, checked as it arrives: a shard holds every row until it is done, so
/// a row may carry no more than one probability per class and a short error message.
fn row_outcome(row: pb::ShardRow, classes: usize) -> Result<(usize, RowOutcome), ShardFailure> {
    let index = row.index as usize;
    if !row.error.is_empty() {
        return Ok((index, RowOutcome::Bad(truncated(row.error))));
    }
    if row.probabilities.len() != classes {
        return Err(ShardFailure {
            message: format!(
                "the worker sent {} probabilities for row {index}, for {classes} classes",
                row.probabilities.len()
            ),
            retryable: true,
            lost: false,
        });
    }
    Ok((index, RowOutcome::Probabilities(row.probabilities)))
}

/// The most bytes of a row's error message kept; the rest is cut with a note.
pub const MAX_ROW_ERROR: usize = 1024;

fn truncated(mut message: String) -> String {
    if message.len() > MAX_ROW_ERROR {
        let mut end = MAX_ROW_ERROR;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let cut = message.len() - end;
        message.truncate(end);
        message.push_str(&format!(" [{cut} more bytes cut]"));
    }
    message
}

/// A worker that refuses the shard itself (bad task, wrong token) will refuse it again; a
/// busy slot may free up; anything else (unavailable, reset) counts as a lost worker.
fn status_failure(status: tonic::Status) -> ShardFailure {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::Unimplemented => ShardFailure {
            message,
            retryable: false,
            lost: false,
        },
        Code::ResourceExhausted => ShardFailure {
            message,
            retryable: true,
            lost: false,
        },
        _ => ShardFailure::lost(message),
    }
}

#[cfg(test)]
#[path = "grpc_runner_tests.rs"]
mod tests;
