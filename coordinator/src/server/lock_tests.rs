//! One coordinator per data directory: a second start on a directory in use is refused
//! with an error naming it, and the directory is free again once the first has stopped.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::*;
use crate::config::ServeConfig;
use crate::error::CoordinatorError;
use crate::scheduler::VirtualLauncher;

async fn start_on(dir: &Path) -> crate::error::Result<(ServerHandle, oneshot::Sender<()>)> {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..ServeConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = start_with_launcher(config, Arc::new(VirtualLauncher::default()), async {
        let _ = stopped.await;
    })
    .await?;
    Ok((handle, stop))
}

#[tokio::test]
async fn a_second_coordinator_on_one_data_directory_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (first, stop_first) = start_on(dir.path()).await.unwrap();

    let err = match start_on(dir.path()).await {
        Ok(_) => panic!("a second coordinator started on {}", dir.path().display()),
        Err(err) => err,
    };
    assert!(
        matches!(err, CoordinatorError::DataDirLocked { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "another coordinator holds the data directory {}",
            dir.path().display()
        )),
        "{message}"
    );
    // The first is unharmed: it still answers.
    crate::client::Client::connect(&first.url(), None)
        .await
        .unwrap()
        .workers()
        .await
        .unwrap();

    stop_first.send(()).unwrap();
    first.wait().await.unwrap();
    let (second, stop_second) = start_on(dir.path())
        .await
        .expect("the data directory is free once the first coordinator stopped");
    stop_second.send(()).unwrap();
    second.wait().await.unwrap();
}
