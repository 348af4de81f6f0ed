//! Builds `shim.c`, which includes the driver's `vml_ring.h` exactly as the
//! kernel module does, for the tests in `src/lib.rs`.
fn main() {
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=../vml_ring.h");
    println!("cargo:rerun-if-changed=../vmlink_abi.h");
    cc::Build::new()
        .file("shim.c")
        .include("..")
        .warnings(true)
        .flag("-Wextra")
        .compile("vmlring");
}
