//! The shipped binaries over TLS with client certificates (mutual TLS), with the
//! certificates `deploy/tls/make-certs.sh` makes: a job goes through `serve`, two
//! workers and the CLI, every connection encrypted and authenticated both ways; and
//! the connections that must fail do, saying why.

use std::process::Command;
use std::time::Duration;

use foldtrain_proto::runtime::test_util::TestPki;
use foldtrain_tests::binary;
use foldtrain_tests::otlp_receiver::OtlpReceiver;
use foldtrain_tests::procs::{
    Process, ok, refused, synth, tiny_job, tls_client, tls_flags, wait_workers_with,
};

#[test]
fn a_job_runs_over_mutual_tls_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = TestPki::make(
        &pki_dir,
        &[
            "coordinator=localhost,127.0.0.1",
            "worker=127.0.0.1",
            "alice=alice",
        ],
    );
    // A second authority, whose certificates the cluster must not accept.
    let rogue_dir = dir.path().join("rogue");
    let rogue = TestPki::make(&rogue_dir, &["mallory=127.0.0.1"]);
    let token = dir.path().join("token");
    std::fs::write(&token, "tls-test-token\n").unwrap();
    let dataset = synth(&dir.path().join("data"), 48, 4, 24, 2);
    // A collector that itself requires client certificates: spans travel encrypted too.
    let coordinator = pki.files("coordinator");
    let collector = OtlpReceiver::start_tls(&coordinator).unwrap();

    let (_serve, line) = Process::start(
        Command::new(binary("foldtrain"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                dir.path().join("coord").to_str().unwrap(),
                "--token-file",
                token.to_str().unwrap(),
            ])
            .args(tls_flags(&pki, "coordinator"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca())
            .env(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                coordinator.cert.as_ref().unwrap(),
            )
            .env(
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                coordinator.key.as_ref().unwrap(),
            )
            .env("OTEL_BSP_SCHEDULE_DELAY", "200"),
        &dir.path().join("coordinator.log"),
        "listening on",
    );
    let url = line.split_whitespace().last().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");

    let (_worker, line) = Process::start(
        Command::new(binary("foldtrain-worker"))
            .args([
                "--coordinator",
                &url,
                "--cpu",
                "--cache-dir",
                dir.path().join("cache").to_str().unwrap(),
                "--token-file",
                token.to_str().unwrap(),
            ])
            .args(tls_flags(&pki, "worker")),
        &dir.path().join("worker.log"),
        "listening on",
    );
    assert!(line.contains("https://127.0.0.1:"), "{line}");

    wait_workers_with(
        || tls_client(&url, &token, &pki, "alice", &["workers", "--json"]),
        1,
        Duration::from_secs(30),
    );

    // The whole path: upload, dispatch to the worker over TLS (the coordinator verifies
    // the worker's certificate and presents its own), events back, results down.
    let mut submit = tls_client(
        &url,
        &token,
        &pki,
        "alice",
        &["submit", "--wait", "--quiet"],
    );
    submit.args(&dataset).args(tiny_job(2, 1));
    let stdout = ok(&mut submit);
    let job = stdout.lines().next().unwrap().trim().to_owned();
    let out = dir.path().join("results");
    ok(&mut tls_client(
        &url,
        &token,
        &pki,
        "alice",
        &["results", &job, "--out", out.to_str().unwrap()],
    ));
    let predictions = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 5, "{predictions}");
    let spans = collector.wait_for(Duration::from_secs(20), |spans| {
        spans
            .iter()
            .any(|s| s.name == "job" && s.attr_text("job") == job)
    });
    assert!(
        spans
            .iter()
            .any(|s| s.name == "job" && s.attr_text("job") == job),
        "the job's span never reached the TLS collector ({} spans)",
        spans.len()
    );

    // Cleartext to the TLS port.
    let plain = url.replace("https://", "http://");
    let mut cmd = tls_client(&plain, &token, &pki, "alice", &["status", &job]);
    cmd.env_remove("FOLDTRAIN_TLS_CA")
        .env_remove("FOLDTRAIN_TLS_CERT")
        .env_remove("FOLDTRAIN_TLS_KEY");
    let err = refused(&mut cmd);
    assert!(
        err.contains(&plain) && err.contains("use https://"),
        "{err}"
    );

    // https:// without a CA to verify the server against.
    let mut cmd = tls_client(&url, &token, &pki, "alice", &["status", &job]);
    cmd.env_remove("FOLDTRAIN_TLS_CA")
        .env_remove("FOLDTRAIN_TLS_CERT")
        .env_remove("FOLDTRAIN_TLS_KEY");
    let err = refused(&mut cmd);
    assert!(err.contains("--tls-ca"), "{err}");

    // A client without a certificate, against a server that requires one.
    let mut cmd = tls_client(&url, &token, &pki, "alice", &["status", &job]);
    cmd.env_remove("FOLDTRAIN_TLS_CERT")
        .env_remove("FOLDTRAIN_TLS_KEY");
    let err = refused(&mut cmd);
    assert!(err.contains(&url), "{err}");

    // A certificate from another authority, even with the right token.
    let mut cmd = tls_client(&url, &token, &rogue, "mallory", &["status", &job]);
    cmd.env("FOLDTRAIN_TLS_CA", pki.ca());
    let err = refused(&mut cmd);
    assert!(err.contains(&url) && err.contains("dropped"), "{err}");

    // A client that trusts another authority does not talk to this server.
    let err = refused(&mut tls_client(
        &url,
        &token,
        &rogue,
        "mallory",
        &["status", &job],
    ));
    assert!(
        err.contains("TLS handshake") && err.contains("--tls-ca"),
        "{err}"
    );

    // And the right certificate with the right token still works.
    ok(&mut tls_client(
        &url,
        &token,
        &pki,
        "alice",
        &["status", &job],
    ));
}

#[test]
fn servers_beyond_loopback_refuse_to_start_without_tls_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let err = refused(Command::new(binary("foldtrain")).args([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        dir.path().join("coord").to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
    ]));
    assert!(
        err.contains("without TLS") && err.contains("--tls-cert") && err.contains("--insecure"),
        "{err}"
    );
    let err = refused(Command::new(binary("foldtrain-worker")).args([
        "--coordinator",
        "http://127.0.0.1:1",
        "--listen",
        "0.0.0.0:0",
        "--cpu",
        "--cache-dir",
        dir.path().join("cache").to_str().unwrap(),
    ]));
    assert!(
        err.contains("without a token or TLS") && err.contains("--insecure"),
        "{err}"
    );
}
