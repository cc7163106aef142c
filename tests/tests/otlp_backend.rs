//! A real tracing backend receives a job's spans: Arize Phoenix (installed by
//! `make otel-backend` into `.venv-otel/`) is started on free ports, the real binaries run
//! a quick job exporting to it over OTLP/gRPC, and the trace is read back over Phoenix's
//! REST API: spans of both services, in one trace, linked across the process boundary.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use foldtrain_tests::procs::free_port;
use foldtrain_tests::traced_job::TracedJob;
use serde_json::Value;

/// Phoenix files spans under the project named by this resource attribute; each process
/// names its project after its service, so the services stay apart in the backend.
const PROJECT_ATTRIBUTE: &str = "openinference.project.name";

fn phoenix_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FOLDTRAIN_PHOENIX_BIN") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-otel/bin/phoenix")
}

/// A running Phoenix server; killed (its whole process group) when dropped.
struct Phoenix {
    child: Child,
    http_port: u16,
    log: PathBuf,
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        // Phoenix runs workers of its own: signal the process group it leads.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Phoenix {
    fn start(dir: &Path) -> (Self, u16) {
        let binary = phoenix_binary();
        assert!(
            binary.is_file(),
            "the OTLP backend (Arize Phoenix) is not installed at {}: run `make otel-backend` \
             (or set FOLDTRAIN_PHOENIX_BIN to a `phoenix` executable)",
            binary.display()
        );
        let (http_port, grpc_port) = (free_port(), free_port());
        let log = dir.join("phoenix.log");
        let work = dir.join("phoenix");
        std::fs::create_dir_all(&work).unwrap();
        let mut cmd = Command::new(&binary);
        cmd.arg("serve")
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", http_port.to_string())
            .env("PHOENIX_GRPC_PORT", grpc_port.to_string())
            .env("PHOENIX_WORKING_DIR", &work)
            // Offline: no usage telemetry of Phoenix's own.
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("phoenix.err")).unwrap());
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let phoenix = Phoenix {
            child,
            http_port,
            log,
        };
        phoenix.wait_healthy(Duration::from_secs(120));
        (phoenix, grpc_port)
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(http_get(self.http_port, "/healthz"), Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "phoenix did not answer /healthz within {timeout:?}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every span Phoenix holds. It files a whole trace under the project of whichever of
    /// its spans came first, so the services are told apart by their code module, not by
    /// project: read them all.
    fn all_spans(&self) -> Vec<Value> {
        let projects = self.get("/v1/projects");
        projects
            .iter()
            .flat_map(|p| {
                let name = p["name"].as_str().unwrap_or_default();
                self.get(&format!("/v1/projects/{name}/spans?limit=1000"))
            })
            .collect()
    }

    /// The `data` array of a JSON GET; empty on 404 (a project not created yet).
    fn get(&self, path: &str) -> Vec<Value> {
        match http_get(self.http_port, path) {
            Ok((200, body)) => {
                let json: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
                json["data"].as_array().cloned().unwrap_or_default()
            }
            Ok((404, _)) => Vec::new(),
            Ok((status, body)) => panic!("GET {path}: HTTP {status}: {body}"),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }
}

/// A plain HTTP/1.1 GET on loopback (no client library needed for one JSON API).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn names(spans: &[Value]) -> BTreeSet<String> {
    spans
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn phoenix_receives_one_trace_from_coordinator_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (phoenix, grpc_port) = Phoenix::start(dir.path());
    let job = TracedJob {
        endpoint: format!("http://127.0.0.1:{grpc_port}"),
        workers: vec![vec![]],
        folds: 2,
        epochs: 1,
        service_attribute: Some(PROJECT_ATTRIBUTE.to_string()),
    };
    let run = job.run(dir.path()).unwrap();

    // Phoenix ingests in the background: poll until the job's whole trace is there.
    let from = |spans: &[Value], module: &str| -> Vec<Value> {
        spans
            .iter()
            .filter(|s| {
                s["attributes"]["code.module.name"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(module))
            })
            .cloned()
            .collect()
    };
    let want_coordinator = [
        "job",
        "fold_attempt",
        "store_checkpoint",
        "finalize",
        "aggregate",
    ];
    let want_worker = ["train_fold", "pull_blobs", "epoch", "evaluate", "predict"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (trace_id, coordinator, worker) = loop {
        let spans = phoenix.all_spans();
        let root = spans.iter().find(|s| {
            s["name"] == "job" && s["attributes"]["job"].as_str() == Some(run.job_id.as_str())
        });
        if let Some(root) = root {
            assert!(root["parent_id"].is_null(), "job is a root span: {root}");
            let trace_id = root["context"]["trace_id"].as_str().unwrap().to_string();
            let trace: Vec<Value> = spans
                .iter()
                .filter(|s| s["context"]["trace_id"] == trace_id.as_str())
                .cloned()
                .collect();
            let (coordinator, worker) = (
                from(&trace, "foldtrain_coordinator"),
                from(&trace, "foldtrain_worker"),
            );
            let complete = want_coordinator
                .iter()
                .all(|n| names(&coordinator).contains(*n))
                && want_worker.iter().all(|n| names(&worker).contains(*n));
            if complete || Instant::now() >= deadline {
                break (trace_id, coordinator, worker);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no job span for {} in phoenix; spans: {:?}\n{}",
            run.job_id,
            names(&spans),
            run.log_tails()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for name in want_coordinator {
        assert!(
            names(&coordinator).contains(name),
            "coordinator spans in trace {trace_id}: {:?}",
            names(&coordinator)
        );
    }
    for name in want_worker {
        assert!(
            names(&worker).contains(name),
            "worker spans in trace {trace_id}: {:?}",
            names(&worker)
        );
    }

    // Across the process boundary: each train_fold's parent is a fold_attempt.
    let attempts: HashMap<&str, &Value> = coordinator
        .iter()
        .filter(|s| s["name"] == "fold_attempt")
        .map(|s| (s["context"]["span_id"].as_str().unwrap(), s))
        .collect();
    let trainings: Vec<&Value> = worker
        .iter()
        .filter(|s| s["name"] == "train_fold")
        .collect();
    assert_eq!(trainings.len(), 2, "{trainings:?}");
    for t in trainings {
        let parent = t["parent_id"].as_str().unwrap_or_default();
        let attempt = attempts
            .get(parent)
            .unwrap_or_else(|| panic!("train_fold's parent {parent} is no fold_attempt: {t}"));
        assert_eq!(attempt["attributes"]["fold"], t["attributes"]["fold"]);
    }
    let epochs: Vec<&Value> = worker.iter().filter(|s| s["name"] == "epoch").collect();
    assert_eq!(epochs.len(), 2, "2 folds x 1 epoch");
    for e in epochs {
        assert!(e["attributes"]["val_f1"].is_number(), "{e}");
    }
}
