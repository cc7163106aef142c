//! Links libtorch for real and records where it lives.
//!
//! torch-sys links `libtorch_cpu` and friends, but with the linker's default
//! `--as-needed` the umbrella `libtorch.so` (which pulls in `libtorch_cuda.so`) is
//! dropped, so CUDA silently goes missing; and without an rpath the binary finds no
//! libtorch at run time. Both are fixed here.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("DEP_TCH_LIBTORCH_LIB is unset: torch-sys must be a direct dependency");
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-env=FOLDTRAIN_LIBTORCH_LIB={lib}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
