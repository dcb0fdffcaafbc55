//! `cargo` run from a test, as a person runs it: without the variables cargo set for the
//! test (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR...). ring's build script reruns when
//! those change, and every crate above it with it: a build made with them is not the one a
//! plain `cargo build` finds fresh, nor the other way round. Shared by the root's tests and
//! the hub's (`#[path]`).

use std::process::Command;

/// What cargo sets for a test and a build script reads back (by name prefix).
const PACKAGE_VARS: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_",
    "CARGO_TARGET_TMPDIR",
    "OUT_DIR",
];

/// `cargo` (the one running the tests) with the test's package variables removed.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    for (k, _) in std::env::vars_os() {
        if PACKAGE_VARS.iter().any(|p| k.to_string_lossy().starts_with(p)) {
            cmd.env_remove(k);
        }
    }
    cmd
}
