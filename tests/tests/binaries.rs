//! The shipped binaries start, and link what the architecture says they link.

use std::process::Command;

use foldtrain_tests::binary;

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
