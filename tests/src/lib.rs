//! Shared helpers for foldtrain's cross-process and end-to-end tests.

pub mod cluster;
pub mod freezing_proxy;
pub mod otlp_receiver;
pub mod procs;
pub mod traced_job;

use std::path::PathBuf;

/// Path of a workspace binary built alongside these tests (`foldtrain`, `foldtrain-worker`).
pub fn binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}
