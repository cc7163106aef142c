//! A job across real network hosts: the coordinator and two workers each in a network
//! namespace of their own, joined by veth pairs to a bridge in the root namespace, where
//! the CLI runs. Under TLS, mutual TLS and one token per role the job must succeed, and
//! tshark, capturing on every veth for the whole job, must see TLS records but neither
//! token nor any JPEG bytes, in the raw TCP payloads or in HTTP/2 headers decoded from
//! them. A cleartext client and a client of another authority are refused. Needs root, `ip netns` and tshark (`make netns-tools`); without them the test
//! says why and skips, unless FOLDTRAIN_REQUIRE_NETNS=1 makes that a failure.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use foldtrain_proto::runtime::test_util::TestPki;
use foldtrain_tests::binary;
use foldtrain_tests::procs::{
    Process, ok, refused, synth, tiny_job, tls_client, tls_flags, wait_workers_with,
};

const COORDINATOR_PORT: u16 = 50051;
const WORKER_PORT: u16 = 50052;
/// The hosts, in namespace order: their addresses are .2, .3 and .4 of the subnet.
const HOSTS: [&str; 3] = ["coord", "w1", "w2"];

/// Runs `ip ARGS`, returning its stderr when it fails.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Three namespaces, their veths and the bridge, all deleted when dropped, however the
/// test ends. Names carry the test's pid, so concurrent runs do not collide, and the
/// leftovers of a run that was killed are swept by the next one.
struct Netns {
    pid: u32,
    subnet: String,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        sweep_dead_runs();
        let routes = ip(&["-4", "route", "show"])?;
        let pid = std::process::id();
        let octet = (0..254)
            .map(|i| 1 + (pid + i) % 254)
            .find(|o| !routes.contains(&format!("10.231.{o}.")))
            .ok_or("every 10.231.x.0/24 is routed already")?;
        let net = Netns {
            pid,
            subnet: format!("10.231.{octet}"),
        };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", net.subnet),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for host in HOSTS {
            let (ns, veth) = (net.namespace(host), net.veth(host));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", net.addr(host));
            for cmd in [
                vec!["addr", "add", &addr, "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
                vec!["link", "set", "lo", "up"],
            ] {
                ip(&[&["-n", ns.as_str()][..], &cmd].concat())?;
            }
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("ftbr{}", self.pid)
    }

    fn namespace(&self, host: &str) -> String {
        format!("ftnet-{}-{host}", self.pid)
    }

    /// The root end of `host`'s veth pair (its other end is `eth0` in the namespace).
    fn veth(&self, host: &str) -> String {
        format!("ftv{}{}", self.pid, &host[host.len() - 1..])
    }

    fn addr(&self, host: &str) -> String {
        let index = HOSTS.iter().position(|h| *h == host).unwrap();
        format!("{}.{}", self.subnet, index + 2)
    }

    /// `program` to be run inside `host`'s namespace.
    fn exec(&self, host: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(host)])
            .arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for host in HOSTS {
            // Whatever still runs there: nothing after a normal end, the servers of a
            // killed run.
            let pids = ip(&["netns", "pids", &self.namespace(host)]).unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-s", "KILL", pid]).status();
            }
            let _ = ip(&["netns", "delete", &self.namespace(host)]);
            let _ = ip(&["link", "delete", &self.veth(host)]);
        }
        let _ = ip(&["link", "delete", &self.bridge()]);
    }
}

/// Deletes what runs whose process is gone left behind (a test killed by a timeout).
fn sweep_dead_runs() {
    let names = ip(&["netns", "list"]).unwrap_or_default();
    for pid in names
        .lines()
        .filter_map(|l| l.strip_prefix("ftnet-")?.split('-').next()?.parse().ok())
    {
        // Names with this process's own pid are from an earlier process of that pid.
        if pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists() {
            drop(Netns {
                pid,
                subnet: String::new(),
            });
        }
    }
}

/// tshark writing every frame on one interface to a pcapng file, until stopped. One file
/// per veth: in a file of several, a frame seen on two veths is taken for a
/// retransmission and never dissected as TLS.
struct Capture {
    child: Child,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    fn start(interface: &str, file: &Path) -> Capture {
        let log = file.with_extension("log");
        let child = Command::new("tshark")
            .args(["-i", interface, "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting tshark");
        let capture = Capture {
            child,
            file: file.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !capture.log_text().contains("Capturing on") {
            assert!(
                Instant::now() < deadline,
                "tshark never started capturing:\n{}",
                capture.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        capture
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the capture the way Ctrl-C does, so tshark flushes the file, and returns it.
    fn stop(mut self) -> PathBuf {
        ok(Command::new("kill").args(["-s", "INT", &self.child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "tshark did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log_text();
        let counted = log.lines().find(|l| l.contains("captured"));
        eprintln!(
            "tshark on {}: {}",
            self.file.display(),
            counted.unwrap_or(&log)
        );
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `fields` of the frames of a capture that match `filter`, with the foldtrain ports
/// decoded as `protocol` (tshark guesses neither TLS nor HTTP/2 on them).
fn read_capture(file: &Path, protocol: &str, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    for port in [COORDINATOR_PORT, WORKER_PORT] {
        cmd.args(["-d", &format!("tcp.port=={port},{protocol}")]);
    }
    cmd.args(["-Y", filter, "-T", "fields", "-E", "separator=/t"]);
    for field in fields {
        cmd.args(["-e", field]);
    }
    ok(&mut cmd)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    let hex: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Every TCP byte stream in the capture, each direction put together in sequence order,
/// so a secret split across two segments is still found.
fn tcp_streams(file: &Path) -> Vec<Vec<u8>> {
    let fields = ["tcp.stream", "tcp.srcport", "tcp.seq", "tcp.payload"];
    let mut flows: HashMap<[String; 2], BTreeMap<u64, Vec<u8>>> = HashMap::new();
    for row in read_capture(file, "tls", "tcp.len > 0", &fields) {
        let [stream, port, seq, payload] = <[String; 4]>::try_from(row).unwrap();
        flows
            .entry([stream, port])
            .or_default()
            .insert(seq.parse().unwrap(), hex_bytes(&payload));
    }
    flows
        .into_values()
        .map(|segments| segments.into_values().flatten().collect())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    // "Uid:" then the real, effective, saved and filesystem ids.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    if uid.and_then(|ids| ids.split_whitespace().nth(1)) != Some("0") {
        return Some("not running as root".into());
    }
    let tshark = Command::new("tshark").arg("--version").output();
    if !tshark.is_ok_and(|o| o.status.success()) {
        return Some("tshark is not installed (make netns-tools)".into());
    }
    None
}

fn skip(why: &str) {
    let required = std::env::var("FOLDTRAIN_REQUIRE_NETNS").is_ok_and(|v| v == "1");
    assert!(!required, "FOLDTRAIN_REQUIRE_NETNS=1 but {why}");
    eprintln!("skipped: network namespaces test: {why}");
}

/// Starts the coordinator and the two workers, each in its own namespace, and returns
/// them with the coordinator's URL once both workers are registered.
fn start_cluster(net: &Netns, pki: &TestPki, dir: &Path) -> (Vec<Process>, String) {
    let coord = net.addr("coord");
    let url = format!("https://{coord}:{COORDINATOR_PORT}");
    let (serve, line) = Process::start(
        net.exec("coord", &binary("foldtrain"))
            .args(["serve", "--listen", &format!("{coord}:{COORDINATOR_PORT}")])
            .arg("--data-dir")
            .arg(dir.join("coord"))
            .arg("--token-file")
            .arg(dir.join("user-token"))
            .arg("--worker-token-file")
            .arg(dir.join("worker-token"))
            .args(tls_flags(pki, "coordinator")),
        &dir.join("coordinator.log"),
        "listening on",
    );
    assert!(line.contains(&url), "{line}");
    let mut processes = vec![serve];
    for host in ["w1", "w2"] {
        let (worker, line) = Process::start(
            net.exec(host, &binary("foldtrain-worker"))
                .args(["--coordinator", &url, "--cpu", "--listen"])
                .arg(format!("{}:{WORKER_PORT}", net.addr(host)))
                .arg("--cache-dir")
                .arg(dir.join(format!("cache-{host}")))
                .arg("--token-file")
                .arg(dir.join("worker-token"))
                .args(tls_flags(pki, host)),
            &dir.join(format!("{host}.log")),
            "listening on",
        );
        assert!(line.contains(&net.addr(host)), "{line}");
        processes.push(worker);
    }
    let listing = || {
        tls_client(
            &url,
            &dir.join("user-token"),
            pki,
            "alice",
            &["workers", "--json"],
        )
    };
    wait_workers_with(listing, 2, Duration::from_secs(60));
    (processes, url)
}

/// What of the images in `data` no capture may hold: the header every one begins with,
/// and 16 bytes of each one's pixels; and how many bytes the images hold.
fn image_secrets(data: &Path) -> (Vec<(String, Vec<u8>)>, usize) {
    // The JPEG magic, FF D8 FF, and the JFIF header after it: E0 00 10 "JFIF" 00. Eleven
    // bytes, as the magic's three alone turn up by chance in megabytes of ciphertext.
    let header = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
    let mut secrets = vec![("a JPEG header".to_string(), header.to_vec())];
    let mut total = 0;
    for split in ["train", "test"] {
        for image in std::fs::read_dir(data.join(split)).unwrap() {
            let image = image.unwrap().path();
            let bytes = std::fs::read(&image).unwrap();
            assert!(bytes.starts_with(&header), "{}", image.display());
            // Its own pixels: the last 16 bytes of scan data, before the end marker FF D9.
            assert!(bytes.ends_with(&[0xFF, 0xD9]), "{}", image.display());
            let pixels = bytes[bytes.len() - 18..bytes.len() - 2].to_vec();
            secrets.push((format!("the pixels of {}", image.display()), pixels));
            total += bytes.len();
        }
    }
    (secrets, total)
}

/// Asserts that the captures (one per host's veth) hold the job's traffic, TLS on every
/// veth, and that a search of their TCP payloads finds `canary` and none of `secrets`.
fn assert_encrypted(
    pcaps: &[PathBuf],
    secrets: &[(String, Vec<u8>)],
    canary: &[u8],
    uploaded: usize,
) {
    let mut canary_seen = false;
    for (host, pcap) in HOSTS.iter().zip(pcaps) {
        let streams = tcp_streams(pcap);
        // And the header values of any cleartext HTTP/2 on the ports, HPACK-decoded: in
        // a cleartext request a token is Huffman-coded, which no byte search finds.
        let value = ["http2.header.value"];
        let headers = read_capture(pcap, "http2", value[0], &value)
            .concat()
            .join("\n");
        let found = |needle: &[u8]| {
            contains(headers.as_bytes(), needle) || streams.iter().any(|s| contains(s, needle))
        };
        for (what, needle) in secrets {
            assert!(!found(needle), "{what} crossed {host}'s veth in cleartext");
        }
        canary_seen |= found(canary);
        let payload: usize = streams.iter().map(Vec::len).sum();
        let tls = read_capture(pcap, "tls", "tls.app_data", &["frame.len"]).len();
        eprintln!(
            "capture on {host}'s veth: {} TCP streams, {payload} payload bytes, {tls} frames \
             of TLS application data",
            streams.len()
        );
        assert!(tls > 0, "no TLS application data on {host}'s veth");
        // The coordinator's veth carries every upload.
        assert!(
            *host != "coord" || payload > uploaded,
            "{payload} bytes captured, fewer than the {uploaded} bytes of images uploaded"
        );
    }
    assert!(canary_seen, "the capture missed a cleartext canary");
}

#[test]
fn a_job_across_namespaces_is_encrypted_on_the_wire_and_strangers_are_refused() {
    if let Some(why) = unsupported() {
        return skip(&why);
    }
    let net = match Netns::create() {
        Ok(net) => net,
        Err(why) => return skip(&why),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let pki = TestPki::make(
        &d("pki"),
        &[
            &format!("coordinator={}", net.addr("coord")),
            &format!("w1={}", net.addr("w1")),
            &format!("w2={}", net.addr("w2")),
            "alice=alice",
        ],
    );
    let rogue = TestPki::make(&d("rogue"), &["mallory=mallory"]);
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let stamp = format!("{}-{nanos}", net.pid);
    let (user_token, worker_token) = (format!("users-{stamp}"), format!("workers-{stamp}"));
    std::fs::write(d("user-token"), &user_token).unwrap();
    std::fs::write(d("worker-token"), &worker_token).unwrap();
    let dataset = synth(&d("data"), 48, 4, 24, 2);
    let (mut secrets, uploaded) = image_secrets(&d("data"));
    secrets.push(("the users' token".into(), user_token.into_bytes()));
    secrets.push(("the workers' token".into(), worker_token.into_bytes()));

    let captures: Vec<Capture> = HOSTS
        .iter()
        .map(|host| Capture::start(&net.veth(host), &d(&format!("{host}.pcapng"))))
        .collect();
    let (_processes, url) = start_cluster(&net, &pki, dir.path());
    let alice = |args: &[&str]| tls_client(&url, &d("user-token"), &pki, "alice", args);
    let started = Instant::now();
    let mut submit = alice(&["submit", "--wait", "--quiet"]);
    submit.args(&dataset).args(tiny_job(2, 1));
    let job = ok(&mut submit).lines().next().unwrap().trim().to_owned();
    let results = d("results");
    ok(alice(&["results", &job, "--out"]).arg(&results));
    let predictions = std::fs::read_to_string(results.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 5, "{predictions}");
    eprintln!(
        "job {job} done across namespaces in {:?}",
        started.elapsed()
    );

    // A certificate of another authority, with the right CA and token.
    let mut cmd = tls_client(&url, &d("user-token"), &rogue, "mallory", &["status", &job]);
    cmd.env("FOLDTRAIN_TLS_CA", pki.ca());
    let err = refused(&mut cmd);
    assert!(err.contains(&url) && err.contains("dropped"), "{err}");

    // Plain http:// to the TLS port, inside the capture. With a token the client refuses
    // before sending anything (HTTP/2 would send the request, token and all, before the
    // server's TLS answer); without one, the server refuses it.
    let plain = url.replace("https://", "http://");
    let err = refused(
        Command::new(binary("foldtrain"))
            .args(["status", &job, "--coordinator", &plain, "--token-file"])
            .arg(d("user-token")),
    );
    assert!(
        err.contains(&format!(
            "refusing to send the token in cleartext to {plain}"
        )),
        "{err}"
    );
    let err =
        refused(Command::new(binary("foldtrain")).args(["status", &job, "--coordinator", &plain]));
    assert!(
        err.contains(&plain) && err.contains("use https://"),
        "{err}"
    );

    // The control: cleartext sent the same way is found by the same search.
    let canary = format!("cleartext-canary-{stamp}");
    let coord = (net.addr("coord"), COORDINATOR_PORT);
    std::net::TcpStream::connect(coord)
        .and_then(|mut probe| probe.write_all(canary.as_bytes()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pcaps: Vec<PathBuf> = captures.into_iter().map(Capture::stop).collect();
    assert_encrypted(&pcaps, &secrets, canary.as_bytes(), uploaded);
}
