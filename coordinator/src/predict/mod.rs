//! `foldtrain predict`'s library: the model folder of a finished job, shards of new images
//! dispatched to worker slots (retried elsewhere when a worker is lost), each finished
//! shard kept on disk, and the final CSVs merged from them in input order.

mod dispatch;
mod error;
mod grpc_runner;
mod model_dir;
mod shard_store;

pub use dispatch::{
    DispatchOptions, RowOutcome, ShardFailure, ShardRunner, ShardUpdate, ShardUpdates, cut_shards,
    dispatch,
};
pub use error::PredictError;
pub use grpc_runner::GrpcShardRunner;
pub use model_dir::ModelDir;
pub use shard_store::{Merged, ShardStore};
