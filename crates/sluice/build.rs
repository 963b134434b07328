//! Builds the built-in filters in `plugins/` for `wasm32-wasip2` and embeds them, so that
//! `cargo build`/`cargo run` of the gateway needs no extra step.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for input in ["plugins", "crates/builtins", "sdk/rust", "sdk/wit"] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    ensure_wasm_target();
    // Shared by every profile of the gateway (debug, release, clippy): one build of the plugins.
    let target_dir = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from).join("plugins");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags and wrappers cargo sets for this crate's own compilation (clippy, target
        // rustflags) are not meant for the plugins.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .status()
        .expect("running cargo to build the built-in plugins");
    assert!(status.success(), "building the built-in plugins (plugins/) failed");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut list = String::from("/// The built-in plugins, by name, as WebAssembly components.\n");
    list.push_str("pub const BUILTINS: &[(&str, &[u8])] = &[\n");
    // Each `plugins/NAME` builds `NAME.wasm`, with `_` for `-` as cargo names libraries.
    for name in sluice_builtins::ALL {
        // Copied, so a later build of the plugins for another profile cannot change this one.
        let wasm = out.join(format!("{name}.wasm"));
        let built = format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
        std::fs::copy(target_dir.join(built), &wasm).unwrap_or_else(|e| panic!("copying {name}.wasm: {e}"));
        writeln!(list, "    ({name:?}, include_bytes!({:?})),", wasm.display().to_string())
            .expect("writing to a String");
    }
    list.push_str("];\n");
    std::fs::write(out.join("builtins.rs"), list).expect("writing builtins.rs");
}

/// Installs the `wasm32-wasip2` standard library with rustup if the toolchain lacks it, so a
/// fresh checkout builds with `cargo build` alone.
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().expect("running rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib/wasm32-wasip2").exists() {
        return;
    }
    let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    assert!(status.is_ok_and(|s| s.success()), "the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2");
}
