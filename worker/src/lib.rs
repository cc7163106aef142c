//! The foldtrain worker: the DenseNet121 model, the image input pipeline, the training
//! loop, and the gRPC service the coordinator calls.

pub mod cli;
pub mod data;
pub mod device;
pub mod model;
pub mod server;
pub mod train;
