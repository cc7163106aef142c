//! The shard runner against an in-process fake worker over loopback: rows arrive checked,
//! and a row too big for its shard ends the attempt instead of piling up in memory.

use std::pin::Pin;

use foldtrain_proto::pb::worker_server::{Worker, WorkerServer};
use foldtrain_proto::{WorkerId, pb};
use futures::{Stream, StreamExt};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::*;
use crate::predict::dispatch::test_template;
use crate::scheduler::{CallToken, GrpcLauncher};

/// A worker that answers every shard with the given rows, then done.
#[derive(Clone)]
struct RowsWorker(Vec<pb::ShardRow>);

#[tonic::async_trait]
impl Worker for RowsWorker {
    type TrainFoldStream = Pin<Box<dyn Stream<Item = Result<pb::FoldEvent, Status>> + Send>>;
    type PredictShardStream = Pin<Box<dyn Stream<Item = Result<pb::ShardEvent, Status>> + Send>>;

    async fn train_fold(
        &self,
        _: Request<pb::FoldTask>,
    ) -> Result<Response<Self::TrainFoldStream>, Status> {
        Err(Status::unimplemented("the fake worker only predicts"))
    }

    async fn predict_shard(
        &self,
        request: Request<pb::ShardTask>,
    ) -> Result<Response<Self::PredictShardStream>, Status> {
        let shard = request.into_inner().shard;
        let events = [
            pb::shard_event::Event::Rows(pb::ShardRows {
                rows: self.0.clone(),
            }),
            pb::shard_event::Event::Done(pb::ShardDone::default()),
        ]
        .map(|event| {
            Ok(pb::ShardEvent {
                shard,
                event: Some(event),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }
}

async fn run_against(rows: Vec<pb::ShardRow>) -> Vec<Result<ShardUpdate, ShardFailure>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .add_service(WorkerServer::new(RowsWorker(rows)))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let slot = SlotTarget {
        worker: WorkerId::new("fake"),
        address,
        call_token: CallToken::new("tok"),
        slot: 0,
        device_index: 0,
    };
    GrpcShardRunner::new(GrpcLauncher::new())
        .run(&slot, test_template())
        .collect()
        .await
}

fn row(index: u32, probabilities: Vec<f32>, error: &str) -> pb::ShardRow {
    pb::ShardRow {
        index,
        probabilities,
        error: error.into(),
    }
}

#[tokio::test]
async fn rows_arrive_with_one_probability_per_class_and_short_errors() {
    let long = "é".repeat(1000);
    let updates = run_against(vec![row(0, vec![0.25, 0.75], ""), row(1, vec![], &long)]).await;
    let [Ok(ShardUpdate::Rows(rows)), Ok(ShardUpdate::Done)] = &updates[..] else {
        panic!("unexpected {updates:?}");
    };
    assert_eq!(rows[0], (0, RowOutcome::Probabilities(vec![0.25, 0.75])));
    let RowOutcome::Bad(message) = &rows[1].1 else {
        panic!("row 1 is not bad: {rows:?}");
    };
    assert_eq!(
        message,
        &format!("{} [976 more bytes cut]", "é".repeat(512))
    );
}

#[tokio::test]
async fn a_row_with_more_probabilities_than_classes_ends_the_attempt() {
    let updates = run_against(vec![
        row(0, vec![0.5, 0.5], ""),
        row(1, vec![0.0; 1_000_000], ""),
    ])
    .await;
    let [Err(failure)] = &updates[..] else {
        panic!("unexpected {:?}", updates.len());
    };
    assert_eq!(
        failure.message,
        "the worker sent 1000000 probabilities for row 1, for 2 classes"
    );
    assert!(failure.retryable && !failure.lost);
}
