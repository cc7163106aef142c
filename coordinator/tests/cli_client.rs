//! The real `foldtrain` binary against an in-process coordinator with a virtual worker:
//! synth, submit --wait, status --json, results, and the errors a user sees.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use foldtrain_coordinator::client::Client;
use foldtrain_coordinator::config::ServeConfig;
use foldtrain_coordinator::scheduler::VirtualLauncher;
use foldtrain_coordinator::server::start_with_launcher;
use foldtrain_proto::pb;

/// Runs the binary with no FOLDTRAIN_* variables from the caller's environment.
async fn foldtrain(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_foldtrain"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FOLDTRAIN_") {
            command.env_remove(key);
        }
    }
    command.args(args).output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_status_and_results_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = start_with_launcher(
        ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("coordinator"),
            token: Some("s3cret".into()),
            ..ServeConfig::default()
        },
        Arc::new(VirtualLauncher::default()),
        async {
            let _ = stopped.await;
        },
    )
    .await
    .unwrap();
    let url = server.url();
    Client::connect(&url, Some("s3cret"))
        .await
        .unwrap()
        .rpc()
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: "w1".into(),
            address: "virtual://w1".into(),
            slots: vec![pb::Slot {
                device_index: -1,
                device_name: "cpu".into(),
            }],
            hostname: "here".into(),
            call_token: "w1-call-token".into(),
        })
        .await
        .unwrap();

    let data = dir.path().join("data");
    let out = foldtrain(&[
        "synth",
        "--out",
        path(&data),
        "--train",
        "45",
        "--test",
        "5",
        "--image-size",
        "16",
        "--folds",
        "2",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let train_csv = data.join("Training_set.csv");
    let train_dir = data.join("train");
    let test_csv = data.join("Testing_set.csv");
    let test_dir = data.join("test");
    let dataset = [
        "--train-csv",
        path(&train_csv),
        "--train-dir",
        path(&train_dir),
        "--test-csv",
        path(&test_csv),
        "--test-dir",
        path(&test_dir),
    ];
    let client = ["--coordinator", &url, "--token-file", path(&token)];

    let mut submit = vec!["submit"];
    submit.extend(dataset);
    submit.extend(client);
    submit.extend(["--folds", "2", "--epochs", "2", "--wait", "--quiet"]);
    let out = foldtrain(&submit).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let job = stdout.lines().next().unwrap().to_string();
    assert!(job.starts_with("job"), "{stdout}");
    assert!(
        stdout.contains("succeeded") && stdout.contains("OOF"),
        "{stdout}"
    );

    let mut status = vec!["status", &job, "--json"];
    status.extend(client);
    let out = foldtrain(&status).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["job_id"], job.as_str());
    assert_eq!(json["state"], "succeeded");
    assert_eq!(json["folds"].as_array().unwrap().len(), 2);

    let results = dir.path().join("results");
    let mut download = vec!["results", &job, "--out", path(&results)];
    download.extend(client);
    let out = foldtrain(&download).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let predictions = std::fs::read_to_string(results.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 6, "{predictions}");
    assert!(results.join("folds/1/best.safetensors").is_file());

    // Errors: a bad override names the flag; a wrong token and a dead URL say so.
    let mut bad = vec!["submit"];
    bad.extend(dataset);
    bad.extend(client);
    bad.extend(["--epochs", "0"]);
    let out = foldtrain(&bad).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--epochs 0: train.epochs"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&token, "wrong\n").unwrap();
    let out = foldtrain(&[
        "workers",
        "--coordinator",
        &url,
        "--token-file",
        path(&token),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("rejected the token"),
        "{}",
        text(&out.stderr)
    );

    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let out = foldtrain(&["status", "--coordinator", &dead]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&dead) && stderr.contains("foldtrain serve"),
        "{stderr}"
    );
}
