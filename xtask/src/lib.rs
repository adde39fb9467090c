//! What the task runner shares with `tornet` (the network launcher library): how a nested
//! `cargo` is started.
//! Standard library only, so depending on it costs nothing.

use std::process::Command;

/// Takes out of `cmd`'s environment what `cargo run` and `cargo test` set for the
/// program they run (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...). Build scripts such as
/// ring's ask to be rerun when those change, so a nested cargo that inherits them
/// rebuilds ring, rustls and everything above them, and the next build from a plain
/// shell rebuilds them back.
pub fn without_run_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_BIN_")
            || matches!(
                &*k,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            )
        {
            cmd.env_remove(&*k);
        }
    }
    cmd
}
