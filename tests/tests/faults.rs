//! Faults injected into the real binaries on loopback: a worker SIGKILLed mid-epoch, a
//! worker SIGSTOPped past its lease, the coordinator SIGKILLed and restarted, a cancel
//! during training, a non-retryable failure, a fold whose retries run out, and a
//! half-open connection between the coordinator and a worker. Each test
//! checks the outcome in `status --json` and in the downloaded results; where training is
//! deterministic (CPU, one thread), the probabilities must equal an uninterrupted run's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foldtrain_tests::freezing_proxy::FreezingProxy;
use foldtrain_tests::procs::{
    Process, client, free_port, ok, run, serve, synth, tiny_job, wait_status, wait_workers, worker,
    worker_with, workers,
};
use serde_json::Value;
use tempfile::TempDir;

/// Long enough epochs (about a second or two on two cores) to land a fault inside one.
const TRAIN_IMAGES: u32 = 300;
const TEST_IMAGES: u32 = 16;
const IMAGE_SIZE: u32 = 32;
/// Lease of the coordinator under test: short, so a silent worker is noticed quickly.
const LEASE_MS: u64 = 1500;
/// Any one job of these tests finishes well within this.
const JOB_TIMEOUT: Duration = Duration::from_secs(240);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A coordinator with its own directory, a data set, and the workers started so far.
struct Scene {
    dir: TempDir,
    dataset: Vec<String>,
    url: String,
    coordinator: Option<Process>,
    /// How many times the coordinator was started, to name its logs.
    starts: usize,
    port: u16,
    workers: Vec<(Process, String)>,
}

impl Scene {
    fn new(workers: usize) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let dataset = synth(
            &dir.path().join("data"),
            TRAIN_IMAGES,
            TEST_IMAGES,
            IMAGE_SIZE,
            3,
        );
        let port = free_port();
        let mut scene = Scene {
            dataset,
            url: String::new(),
            coordinator: None,
            starts: 0,
            port,
            workers: Vec::new(),
            dir,
        };
        scene.start_coordinator();
        for _ in 0..workers {
            scene.add_worker();
        }
        wait_workers(&scene.url, workers, Duration::from_secs(30));
        scene
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts (or restarts) the coordinator on the same port and data directory.
    fn start_coordinator(&mut self) {
        self.starts += 1;
        let n = self.starts;
        let (process, url) = serve(
            &self.path("coordinator"),
            self.port,
            LEASE_MS,
            &self.path(&format!("coordinator-{n}.log")),
        );
        self.coordinator = Some(process);
        self.url = url;
    }

    fn add_worker(&mut self) -> String {
        let i = self.workers.len();
        let (process, id) = worker(
            &self.url,
            &self.path(&format!("cache-{i}")),
            &self.path(&format!("worker-{i}.log")),
        );
        self.workers.push((process, id.clone()));
        id
    }

    fn submit(&self, job: &[String], name: &str) -> String {
        let mut cmd = client(&self.url, &["submit", "--quiet", "--name", name]);
        cmd.args(&self.dataset).args(job);
        ok(&mut cmd).lines().next().unwrap().trim().to_owned()
    }

    /// Waits for the job to reach a final state and returns its status.
    fn finish(&self, job: &str) -> Value {
        wait_status(&self.url, job, JOB_TIMEOUT, "the job to end", |s| {
            ["succeeded", "failed", "cancelled"].contains(&s["state"].as_str().unwrap_or(""))
        })
    }

    fn results(&self, job: &str) -> PathBuf {
        let out = self.path(&format!("results-{job}"));
        ok(&mut client(
            &self.url,
            &["results", job, "--out", out.to_str().unwrap()],
        ));
        out
    }

    /// Waits until `worker` is a batch into `epoch` of a fold; returns the fold and epoch.
    fn wait_for_epoch(&self, job: &str, worker: &str, epoch: u64) -> (u64, u64) {
        let what = format!("a fold on {worker} in epoch {epoch}");
        let seen = wait_status(&self.url, job, JOB_TIMEOUT, &what, |s| {
            fold_in_epoch(s, worker, epoch).is_some()
        });
        fold_in_epoch(&seen, worker, epoch).unwrap()
    }

    /// Every process log, to explain a failed assertion.
    fn logs(&self) -> String {
        let mut text = String::new();
        if let Some(c) = &self.coordinator {
            text.push_str(&c.log_tail());
        }
        for (w, _) in &self.workers {
            text.push('\n');
            text.push_str(&w.log_tail());
        }
        text
    }

    /// Runs `job` again, untouched, and asserts that its results equal `out`'s.
    fn assert_same_as_uninterrupted(&self, job: &[String], out: &Path) {
        let again = self.submit(job, "uninterrupted");
        let s = self.finish(&again);
        assert_eq!(s["state"], "succeeded", "{s:#}\n{}", self.logs());
        let reference = self.results(&again);
        for file in ["probabilities.csv", "predictions.csv", "oof.csv"] {
            let (a, b) = (
                std::fs::read(out.join(file)).unwrap(),
                std::fs::read(reference.join(file)).unwrap(),
            );
            assert!(
                a == b,
                "{file} differs from an uninterrupted run of the same job:\n{}\n---\n{}",
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            );
        }
    }
}

/// The fold `worker` is training and its epoch, once it is a batch into `epoch` (and no
/// further: a fold in its last epoch may end before the fault lands).
fn fold_in_epoch(s: &Value, worker: &str, epoch: u64) -> Option<(u64, u64)> {
    s["folds"].as_array()?.iter().find_map(|f| {
        let here = f["state"] == "running"
            && f["worker_id"] == worker
            && f["epoch"].as_u64()? == epoch
            && f["batch"].as_u64()? >= 1;
        here.then(|| (f["fold"].as_u64().unwrap(), f["epoch"].as_u64().unwrap()))
    })
}

fn attempts(s: &Value, fold: u64) -> Vec<Value> {
    s["folds"][fold as usize]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Kills the worker training a fold in epoch 2 of 3, then checks that the fold resumed
/// from its epoch-1 checkpoint on the idle worker, and that nothing differs from a run
/// without the fault.
#[test]
fn worker_killed_mid_epoch_resumes_from_its_checkpoint() {
    let mut scene = Scene::new(3);
    let flags = tiny_job(2, 3);
    let (job, victim) = (
        scene.submit(&flags, "killed-worker"),
        scene.workers[0].1.clone(),
    );
    let (fold, epoch) = scene.wait_for_epoch(&job, &victim, 2);
    let killed_at = now_ms();
    scene.workers.remove(0).0.kill_hard();

    let resumed = wait_status(&scene.url, &job, JOB_TIMEOUT, "the fold to resume", |s| {
        attempts(s, fold).len() >= 2 && s["folds"][fold as usize]["batch"].as_u64() >= Some(1)
    });
    let back_at = now_ms();
    let s = scene.finish(&job);
    assert_eq!(s["state"], "succeeded", "{s:#}\n{}", scene.logs());
    let tries = attempts(&s, fold);
    assert_eq!(tries.len(), 2, "{s:#}");
    assert_eq!(tries[0]["worker_id"], victim.as_str());
    assert_eq!(tries[0]["state"], "lost", "{s:#}");
    assert!(
        tries[0]["reason"].as_str().unwrap().contains("worker_lost"),
        "{s:#}"
    );
    assert_ne!(tries[1]["worker_id"], victim.as_str());
    // At most the epoch in flight is lost.
    let from = tries[1]["resumed_from_epoch"].as_u64().unwrap_or(0);
    assert!(
        from + 1 >= epoch,
        "resumed from epoch {from}, killed in {epoch}: {s:#}"
    );
    eprintln!(
        "worker SIGKILL in epoch {epoch}: resumed from epoch {from}; {} ms from the kill \
         to the new attempt, {} ms to its first batch seen",
        tries[1]["started_unix_ms"].as_i64().unwrap() - killed_at,
        back_at - killed_at
    );
    let _ = resumed;
    let out = scene.results(&job);
    scene.assert_same_as_uninterrupted(&flags, &out);
}

/// Freezes a training worker past its lease: the fold moves on, and when the worker
/// wakes its stale attempt is fenced off; the results match an uninterrupted run.
/// SIGTERMs the worker training a fold a batch into epoch 2 of 3, as Kubernetes, Slurm
/// and systemd do before they kill. The worker hands the fold back with a checkpoint at
/// the end of its batch and exits 0; the other worker resumes it at the next batch of
/// that epoch (not at the epoch's start), the retry budget is untouched, and the results
/// equal an uninterrupted run's.
#[test]
fn worker_sigterm_hands_back_its_fold_mid_epoch() {
    let mut scene = Scene::new(2);
    // Batches of 8 at 64 px: about 19 an epoch of a second or more, so the SIGTERM lands
    // inside an epoch. One attempt allowed: a drain must not use it up.
    let flags: Vec<String> = tiny_job(2, 3)
        .into_iter()
        .map(|f| match f.as_str() {
            "16" => "8".to_owned(),
            "32" => "64".to_owned(),
            _ => f,
        })
        .chain(["--max-attempts".to_owned(), "1".to_owned()])
        .collect();
    let (job, victim) = (
        scene.submit(&flags, "drained-worker"),
        scene.workers[0].1.clone(),
    );
    let (fold, _) = scene.wait_for_epoch(&job, &victim, 2);
    let (process, _) = scene.workers.remove(0);
    let log = process.log_path().to_path_buf();
    let exit = process.terminate(Duration::from_secs(60));
    assert!(
        exit.success(),
        "the worker exited with {exit} after SIGTERM"
    );

    let s = scene.finish(&job);
    assert_eq!(s["state"], "succeeded", "{s:#}\n{}", scene.logs());
    let tries = attempts(&s, fold);
    assert_eq!(tries.len(), 2, "{s:#}");
    assert_eq!(tries[0]["worker_id"], victim.as_str());
    assert!(
        tries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("worker_stopping"),
        "{s:#}"
    );
    assert_ne!(tries[1]["worker_id"], victim.as_str());
    // The epoch the SIGTERM landed in: on a loaded machine the fold may have moved on
    // from the one seen in the stream before the signal arrived.
    let reason = tries[0]["reason"].as_str().unwrap();
    let epoch: u64 = reason
        .split("handed back at epoch ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in {reason:?}"));
    assert_eq!(
        tries[1]["resumed_from_epoch"].as_u64(),
        Some(epoch - 1),
        "{s:#}"
    );

    // The drained worker sent a checkpoint part way through the epoch, and the other
    // worker took it up at the next batch.
    let drained = std::fs::read_to_string(&log).unwrap();
    let sent = drained
        .lines()
        .find(|l| l.contains("draining: checkpoint of the epoch in progress"))
        .unwrap_or_else(|| panic!("no drain checkpoint in the worker's log:\n{drained}"));
    let batch = field(sent, "batch");
    assert!(batch >= 1, "{sent}");
    let resumed_log = scene.workers[0].0.log_text();
    let resumed = resumed_log
        .lines()
        .find(|l| l.contains("resuming from the latest checkpoint"))
        .unwrap_or_else(|| panic!("no resume in the other worker's log:\n{resumed_log}"));
    assert_eq!(field(resumed, "batches_done"), batch, "{resumed}");
    eprintln!("worker SIGTERM in epoch {epoch}: handed back after batch {batch}, resumed there");

    let out = scene.results(&job);
    scene.assert_same_as_uninterrupted(&flags, &out);
}

/// The number after `name=` in a log line (its colour codes left out).
fn field(line: &str, name: &str) -> u64 {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ ... m
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    let line = plain.as_str();
    let at = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line}"));
    line[at + name.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name}= is not a number in {line}"))
}

#[test]
fn worker_stopped_past_its_lease_is_fenced_off() {
    let scene = Scene::new(3);
    let flags = tiny_job(2, 3);
    let (job, victim) = (
        scene.submit(&flags, "frozen-worker"),
        scene.workers[0].1.clone(),
    );
    let (fold, _) = scene.wait_for_epoch(&job, &victim, 2);
    let stopped_at = now_ms();
    scene.workers[0].0.signal("STOP");
    let moved = wait_status(&scene.url, &job, JOB_TIMEOUT, "the fold to move", |s| {
        let tries = attempts(s, fold);
        tries.len() >= 2 && tries[1]["state"] == "running"
    });
    let moved_after = attempts(&moved, fold)[1]["started_unix_ms"]
        .as_i64()
        .unwrap()
        - stopped_at;
    // The frozen worker wakes up while the new attempt trains.
    scene.workers[0].0.signal("CONT");
    let s = scene.finish(&job);
    assert_eq!(s["state"], "succeeded", "{s:#}\n{}", scene.logs());
    let tries = attempts(&s, fold);
    assert_eq!(tries.len(), 2, "{s:#}");
    assert_eq!(tries[0]["state"], "lost", "{s:#}");
    assert!(
        tries[0]["reason"].as_str().unwrap().contains("lease"),
        "{s:#}"
    );
    assert_eq!(tries[1]["state"], "succeeded", "{s:#}");
    assert_eq!(
        s["folds"][fold as usize]["worker_id"],
        tries[1]["worker_id"]
    );
    eprintln!(
        "worker SIGSTOP: the fold moved {moved_after} ms after the stop (lease {LEASE_MS} ms)"
    );
    // The woken worker registers again and is usable.
    wait_workers(&scene.url, 3, Duration::from_secs(30));
    let out = scene.results(&job);
    scene.assert_same_as_uninterrupted(&flags, &out);
}

/// SIGKILLs the coordinator with one fold finished and another in epoch 2, restarts it on
/// the same data directory, and checks that the finished fold stays finished, the running
/// one resumes, the workers come back by themselves and `watch` rides it out.
#[test]
fn coordinator_killed_and_restarted_resumes_the_job() {
    let mut scene = Scene::new(2);
    let flags = tiny_job(3, 3);
    let job = scene.submit(&flags, "killed-coordinator");
    let watch_log = scene.path("watch.log");
    let mut watch = Command::new(foldtrain_tests::binary("foldtrain"))
        .args(["watch", &job])
        .env("FOLDTRAIN_COORDINATOR", &scene.url)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&watch_log).unwrap())
        .spawn()
        .unwrap();
    let seen = wait_status(
        &scene.url,
        &job,
        JOB_TIMEOUT,
        "a fold done and one in epoch 2",
        |s| {
            let folds = s["folds"].as_array().unwrap();
            folds.iter().any(|f| f["state"] == "done")
                && folds.iter().any(|f| {
                    f["state"] == "running" && f["epoch"] == 2 && f["batch"].as_u64() >= Some(1)
                })
        },
    );
    let folds_where = |keep: &dyn Fn(&Value) -> bool| -> Vec<u64> {
        seen["folds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| keep(f))
            .map(|f| f["fold"].as_u64().unwrap())
            .collect()
    };
    let done = folds_where(&|f| f["state"] == "done");
    // Epoch 2 of 3: the fold holds an epoch-1 checkpoint and is an epoch from its end.
    let checkpointed = folds_where(&|f| f["state"] == "running" && f["epoch"] == 2);
    let (killed_at, killed_at_ms) = (Instant::now(), now_ms());
    scene.coordinator.take().unwrap().kill_hard();
    std::thread::sleep(Duration::from_millis(300));
    scene.start_coordinator();
    wait_workers(&scene.url, 2, Duration::from_secs(30));
    let registered = killed_at.elapsed();
    // What is left may train faster than a poll can catch it running: the resumption is
    // read from the attempts once the job has ended, never waited for.
    let s = scene.finish(&job);
    assert_eq!(s["state"], "succeeded", "{s:#}\n{}", scene.logs());
    for fold in &done {
        assert_eq!(
            attempts(&s, *fold).len(),
            1,
            "finished fold {fold} ran again: {s:#}"
        );
    }
    // A fold that was past its first epoch resumes from a checkpoint, not from zero.
    assert!(!checkpointed.is_empty());
    let mut back_ms = 0;
    for fold in checkpointed {
        let tries = attempts(&s, fold);
        back_ms = tries[1]["started_unix_ms"].as_i64().unwrap() - killed_at_ms;
        assert!(
            back_ms > 0,
            "fold {fold}'s second attempt began before the kill: {s:#}"
        );
        assert_eq!(tries.len(), 2, "{s:#}");
        assert_eq!(tries[0]["state"], "lost", "{s:#}");
        assert!(
            tries[0]["reason"].as_str().unwrap().contains("restarted"),
            "{s:#}"
        );
        assert!(
            tries.last().unwrap()["resumed_from_epoch"].as_u64() >= Some(1),
            "fold {fold} restarted from zero: {s:#}"
        );
    }
    eprintln!(
        "coordinator SIGKILL: workers back in {} ms, the fold resumed {back_ms} ms after the kill",
        registered.as_millis(),
    );

    // `watch` reconnected and saw the job through.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = watch.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "watch never ended");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut watch.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(
        exit.success() && stdout.contains("OOF"),
        "watch ended {exit} with:\n{stdout}\n{}",
        std::fs::read_to_string(&watch_log).unwrap_or_default()
    );
    let out = scene.results(&job);
    scene.assert_same_as_uninterrupted(&flags, &out);
}

/// Cancels a job with one fold finished and others training: every fold stops, the slots
/// are freed, the job ends cancelled, and the finished fold can still be downloaded.
#[test]
fn cancel_stops_training_and_keeps_finished_folds() {
    let scene = Scene::new(2);
    let job = scene.submit(&tiny_job(3, 3), "cancelled");
    let seen = wait_status(
        &scene.url,
        &job,
        JOB_TIMEOUT,
        "a fold done and one training",
        |s| {
            let folds = s["folds"].as_array().unwrap();
            folds.iter().any(|f| f["state"] == "done")
                && folds
                    .iter()
                    .any(|f| f["state"] == "running" && f["batch"].as_u64() >= Some(1))
        },
    );
    let done: Vec<u64> = seen["folds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["state"] == "done")
        .map(|f| f["fold"].as_u64().unwrap())
        .collect();
    let cancelled_at = now_ms();
    let answer: Value =
        serde_json::from_str(&ok(&mut client(&scene.url, &["cancel", &job, "--json"]))).unwrap();
    assert_eq!(answer["state"], "cancelled", "{answer:#}");

    let s = scene.finish(&job);
    assert_eq!(s["state"], "cancelled", "{s:#}");
    let mut slowest = 0;
    for f in s["folds"].as_array().unwrap() {
        for a in f["attempts"].as_array().unwrap() {
            assert_ne!(a["state"], "running", "{s:#}");
            if a["state"] == "cancelled" {
                slowest = slowest.max(a["ended_unix_ms"].as_i64().unwrap() - cancelled_at);
            }
        }
    }
    // Both slots come free: the workers stopped training.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy: u64 = workers(&scene.url)
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["busy_slots"].as_u64().unwrap())
            .sum();
        if busy == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "slots still busy after cancel");
        std::thread::sleep(Duration::from_millis(50));
    }
    let freed = now_ms() - cancelled_at;
    eprintln!("cancel: attempts ended within {slowest} ms, slots free within {freed} ms");

    let out = scene.results(&job);
    for fold in done {
        for file in ["best.safetensors", "history.csv", "probabilities.csv"] {
            let path = out.join(format!("folds/{fold}/{file}"));
            assert!(path.is_file(), "{} missing after cancel", path.display());
        }
    }
}

/// A NaN loss is not retried: the job fails at once, and the message names the fold, the
/// worker and the cause.
#[test]
fn non_retryable_failure_fails_the_job_at_once() {
    let scene = Scene::new(1);
    let mut flags = tiny_job(2, 2);
    flags.extend(["--lr".into(), "1e30".into()]);
    let job = scene.submit(&flags, "nan");
    let s = scene.finish(&job);
    assert_eq!(s["state"], "failed", "{s:#}");
    let message = s["message"].as_str().unwrap();
    let worker = &scene.workers[0].1;
    assert!(
        message.contains("fold")
            && message.contains(worker.as_str())
            && message.contains("nan_loss"),
        "{message}"
    );
    let tried: Vec<usize> = s["folds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["attempts"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        tried.iter().max(),
        Some(&1),
        "a non-retryable failure was retried: {s:#}"
    );

    // `watch` on a failed job says so and exits non-zero.
    let watched = run(&mut client(&scene.url, &["watch", &job]));
    assert!(!watched.status.success());
}

/// A worker whose blob cache cannot be written fails each attempt with an I/O error; the
/// fold is retried up to `--max-attempts`, then the job fails naming the cause, and
/// `status` lists every attempt and why it ended.
#[test]
fn retries_run_out_after_max_attempts() {
    let scene = Scene::new(1);
    // The worker's cache directory turns into a file: every blob write now fails.
    let cache = scene.path("cache-0");
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::write(&cache, b"not a directory").unwrap();
    let mut flags = tiny_job(2, 1);
    flags.extend(["--max-attempts".into(), "2".into()]);
    let job = scene.submit(&flags, "retries");
    let s = scene.finish(&job);
    assert_eq!(s["state"], "failed", "{s:#}");
    let message = s["message"].as_str().unwrap();
    assert!(
        message.contains("failed 2 times") && message.contains("cache-0"),
        "{message}"
    );
    let failed = s["folds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["attempts"].as_array().unwrap().len() == 2)
        .unwrap_or_else(|| panic!("no fold with 2 attempts: {s:#}"));
    for a in failed["attempts"].as_array().unwrap() {
        assert_eq!(a["state"], "failed", "{s:#}");
        assert!(a["reason"].as_str().unwrap().starts_with("io:"), "{s:#}");
    }
}

/// Cuts the coordinator's connection to a worker mid-fold without closing it (a
/// half-open connection: a proxy between them stops passing bytes either way), while the
/// worker's heartbeats still arrive. HTTP/2 keepalives on both ends must notice within a
/// bounded time: the coordinator ends the attempt as lost, and the worker stops the fold,
/// so its only slot takes the fold's next attempt.
#[test]
fn a_half_open_connection_frees_the_workers_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let dataset = synth(&path("data"), TRAIN_IMAGES, TEST_IMAGES, IMAGE_SIZE, 3);
    let (coordinator, url) = serve(
        &path("coordinator"),
        free_port(),
        LEASE_MS,
        &path("coordinator.log"),
    );
    let worker_port = free_port();
    let proxy = FreezingProxy::start(([127, 0, 0, 1], worker_port).into());
    let listen = format!("127.0.0.1:{worker_port}");
    let advertise = format!("http://{}", proxy.addr());
    let (worker, id) = worker_with(
        &url,
        &path("cache"),
        &path("worker.log"),
        &["--listen", &listen, "--advertise", &advertise],
    );
    wait_workers(&url, 1, Duration::from_secs(30));
    // Far more epochs than the test waits for: the fold is still training when both
    // ends give the connection up, so only that can free the slot.
    let mut submit = client(&url, &["submit", "--quiet", "--name", "half-open"]);
    submit.args(&dataset).args(tiny_job(2, 1000));
    let job = ok(&mut submit).lines().next().unwrap().trim().to_owned();
    let logs = || format!("{}\n{}", coordinator.log_tail(), worker.log_tail());

    let seen = wait_status(&url, &job, JOB_TIMEOUT, "a fold in epoch 2", |s| {
        fold_in_epoch(s, &id, 2).is_some()
    });
    let (fold, _) = fold_in_epoch(&seen, &id, 2).unwrap();
    let frozen_at = Instant::now();
    assert!(proxy.freeze_open_connections() >= 1);

    // Keepalive pings every 10 s, 20 s to answer: both ends give up within about 30 s;
    // the heartbeats, which bypass the proxy, keep the lease alive all along.
    let bound = Duration::from_secs(60);
    let moved = wait_status(&url, &job, bound, "the fold's next attempt to train", |s| {
        let tries = attempts(s, fold);
        tries.len() >= 2
            && tries[1]["state"] == "running"
            && s["folds"][fold as usize]["batch"].as_u64() >= Some(1)
    });
    let slot_freed = frozen_at.elapsed();
    let tries = attempts(&moved, fold);
    assert_eq!(tries[0]["state"], "lost", "{moved:#}\n{}", logs());
    assert_eq!(tries[1]["worker_id"], id.as_str(), "{moved:#}");
    let worker_log = worker.log_text();
    assert!(
        worker_log.contains("fold stopped: the caller went away"),
        "the worker did not stop the cut fold:\n{}",
        logs()
    );
    assert!(slot_freed < bound, "{slot_freed:?}");
    eprintln!(
        "half-open: the worker's only slot trained the fold's next attempt {:.1} s after the cut",
        slot_freed.as_secs_f64()
    );
    ok(&mut client(&url, &["cancel", &job]));
}
