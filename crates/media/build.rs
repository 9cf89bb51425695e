//! Warns when the H.264 encoder is going to be built without its assembly.
//!
//! OpenH264's build (the `openh264-sys2` crate) assembles its SIMD code with `nasm` when it
//! finds it and otherwise, silently, builds plain C, which encodes about 1.6x slower.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for variable in ["NASM", "OPENH264_NO_ASM", "PATH"] {
        println!("cargo:rerun-if-env-changed={variable}");
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !matches!(arch.as_str(), "x86" | "x86_64") || env::var_os("OPENH264_NO_ASM").is_some() {
        return;
    }
    let nasm_found = match env::var_os("NASM") {
        Some(path) => Path::new(&path).is_file(),
        None => env::var_os("PATH").is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join("nasm").is_file())),
    };
    if !nasm_found {
        println!(
            "cargo:warning=nasm is not installed, so OpenH264 is built without its assembly and encodes about 1.6x \
             slower: apt-get install nasm, then cargo clean -p openh264-sys2"
        );
    }
}
