//! The shipped binaries start, link what the architecture says they link, and keep one
//! coordinator per data directory.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use foldtrain_tests::binary;
use foldtrain_tests::procs::serve;

fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn both_binaries_print_help() {
    let help = output(Command::new(binary("foldtrain")).arg("--help"));
    assert!(help.contains("Usage: foldtrain"), "{help}");
    let help = output(Command::new(binary("foldtrain-worker")).arg("--help"));
    assert!(help.contains("--coordinator"), "{help}");
}

#[test]
fn worker_needs_libtorch_and_finds_it_without_ld_library_path() {
    let dynamic = output(
        Command::new("readelf")
            .arg("-d")
            .arg(binary("foldtrain-worker")),
    );
    assert!(
        dynamic.contains("[libtorch.so]"),
        "libtorch.so is not NEEDED:\n{dynamic}"
    );
    assert!(dynamic.contains("(RUNPATH)"), "no RUNPATH:\n{dynamic}");
    let devices = output(
        Command::new(binary("foldtrain-worker"))
            .arg("--list-devices")
            .env_remove("LD_LIBRARY_PATH"),
    );
    assert!(devices.contains("libtorch_cuda_loaded=true"), "{devices}");
}

#[test]
fn coordinator_never_links_libtorch() {
    let libs = output(Command::new("ldd").arg(binary("foldtrain")));
    assert!(
        !libs.contains("libtorch") && !libs.contains("libc10"),
        "foldtrain links libtorch:\n{libs}"
    );
}

#[test]
fn a_second_coordinator_on_one_data_directory_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (first, _) = serve(&data, 0, 15_000, &dir.path().join("first.log"));
    let mut second = Command::new(binary("foldtrain"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second coordinator is serving {}", data.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second coordinator ran: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "another coordinator holds the data directory {}",
            data.display()
        )),
        "{stderr}"
    );
    // Stopped, the first lets go of the directory and a new coordinator takes it.
    assert!(first.terminate(Duration::from_secs(30)).success());
    let (_third, url) = serve(&data, 0, 15_000, &dir.path().join("third.log"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
}
