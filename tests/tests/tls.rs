//! The shipped binaries over TLS with client certificates (mutual TLS), with the
//! certificates `deploy/tls/make-certs.sh` makes: a job goes through `serve`, two
//! workers and the CLI, every connection encrypted and authenticated both ways; and
//! the connections that must fail do, saying why.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use foldtrain_proto::runtime::test_util::TestPki;
use foldtrain_proto::runtime::tls::TlsFiles;
use foldtrain_tests::binary;
use foldtrain_tests::otlp_receiver::OtlpReceiver;
use foldtrain_tests::procs::{Process, ok, run, synth, tiny_job, wait_workers_with};

/// `--tls-cert`, `--tls-key` and `--tls-ca` for `name`'s certificate.
fn tls_flags(pki: &TlsDir, name: &str) -> Vec<String> {
    let dir = &pki.0;
    [
        "--tls-cert".to_string(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "--tls-key".to_string(),
        dir.join(format!("{name}.key")).display().to_string(),
        "--tls-ca".to_string(),
        dir.join("ca.pem").display().to_string(),
    ]
    .to_vec()
}

struct TlsDir(std::path::PathBuf);

/// A client command for `url` that presents `identity` (a certificate of the CA in
/// `pki`) and the token.
fn client(url: &str, token: &Path, pki: &TlsDir, identity: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("foldtrain"));
    cmd.args(args)
        .env("FOLDTRAIN_COORDINATOR", url)
        .env("FOLDTRAIN_TOKEN_FILE", token)
        .env("FOLDTRAIN_TLS_CA", pki.0.join("ca.pem"))
        .env("FOLDTRAIN_TLS_CERT", pki.0.join(format!("{identity}.pem")))
        .env("FOLDTRAIN_TLS_KEY", pki.0.join(format!("{identity}.key")));
    cmd
}

fn refused(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "expected a refusal, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("refused as expected: {}", err.trim());
    err
}

#[test]
fn a_job_runs_over_mutual_tls_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    TestPki::make(
        &pki_dir,
        &[
            "coordinator=localhost,127.0.0.1",
            "worker=127.0.0.1",
            "alice=alice",
        ],
    );
    let pki = TlsDir(pki_dir);
    // A second authority, whose certificates the cluster must not accept.
    let rogue_dir = dir.path().join("rogue");
    TestPki::make(&rogue_dir, &["mallory=127.0.0.1"]);
    let rogue = TlsDir(rogue_dir);
    let token = dir.path().join("token");
    std::fs::write(&token, "tls-test-token\n").unwrap();
    let dataset = synth(&dir.path().join("data"), 48, 4, 24, 2);
    // A collector that itself requires client certificates: spans travel encrypted too.
    let collector = OtlpReceiver::start_tls(&TlsFiles {
        cert: Some(pki.0.join("coordinator.pem")),
        key: Some(pki.0.join("coordinator.key")),
        ca: Some(pki.0.join("ca.pem")),
    })
    .unwrap();

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
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.0.join("ca.pem"))
            .env(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                pki.0.join("coordinator.pem"),
            )
            .env(
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                pki.0.join("coordinator.key"),
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
        || client(&url, &token, &pki, "alice", &["workers", "--json"]),
        1,
        Duration::from_secs(30),
    );

    // The whole path: upload, dispatch to the worker over TLS (the coordinator verifies
    // the worker's certificate and presents its own), events back, results down.
    let mut submit = client(
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
    ok(&mut client(
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
    let mut cmd = client(&plain, &token, &pki, "alice", &["status", &job]);
    cmd.env_remove("FOLDTRAIN_TLS_CA")
        .env_remove("FOLDTRAIN_TLS_CERT")
        .env_remove("FOLDTRAIN_TLS_KEY");
    let err = refused(&mut cmd);
    assert!(
        err.contains(&plain) && err.contains("use https://"),
        "{err}"
    );

    // https:// without a CA to verify the server against.
    let mut cmd = client(&url, &token, &pki, "alice", &["status", &job]);
    cmd.env_remove("FOLDTRAIN_TLS_CA")
        .env_remove("FOLDTRAIN_TLS_CERT")
        .env_remove("FOLDTRAIN_TLS_KEY");
    let err = refused(&mut cmd);
    assert!(err.contains("--tls-ca"), "{err}");

    // A client without a certificate, against a server that requires one.
    let mut cmd = client(&url, &token, &pki, "alice", &["status", &job]);
    cmd.env_remove("FOLDTRAIN_TLS_CERT")
        .env_remove("FOLDTRAIN_TLS_KEY");
    let err = refused(&mut cmd);
    assert!(err.contains(&url), "{err}");

    // A certificate from another authority, even with the right token.
    let mut cmd = client(&url, &token, &rogue, "mallory", &["status", &job]);
    cmd.env("FOLDTRAIN_TLS_CA", pki.0.join("ca.pem"));
    let err = refused(&mut cmd);
    assert!(err.contains(&url) && err.contains("dropped"), "{err}");

    // A client that trusts another authority does not talk to this server.
    let err = refused(&mut client(
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
    ok(&mut client(&url, &token, &pki, "alice", &["status", &job]));
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
