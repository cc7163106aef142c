//! The foldtrain coordinator: dataset ingestion and validation, fold splitting, job
//! state, scheduling, aggregation and reporting, and the command-line interface.
//! It never links libtorch.

pub mod aggregate;
pub mod cli;
pub mod client;
pub mod config;
pub mod dataset;
pub mod error;
pub mod predict;
pub mod report;
pub mod scheduler;
pub mod server;
pub mod split;
pub mod store;
pub mod synth;
