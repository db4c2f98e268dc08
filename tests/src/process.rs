//! The `phasegate` binary as a real child process, with its log in a file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use phasegate_devkit::ChildProcess;

/// The variable that can name the `phasegate` binary; unset, the one cargo
/// built next to the test executable is used.
pub const PHASEGATE_BIN_ENV: &str = "PHASEGATE_BIN";

/// Path of the `phasegate` binary under test.
pub fn phasegate_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(PHASEGATE_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test executable location")?;
    let bin = dir.join("phasegate");
    if !bin.exists() {
        bail!(
            "{} does not exist: build it with `cargo build -p phasegate-cli` (make test does), or set {PHASEGATE_BIN_ENV}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts `phasegate <args>` as `name`, its output in a log of its own.
/// It logs at `RUST_LOG` (`info` when unset).
///
/// # Errors
///
/// When the binary is missing or does not start.
pub fn spawn_phasegate(name: &str, args: &[&str]) -> anyhow::Result<ChildProcess> {
    spawn_phasegate_env(name, args, &[])
}

/// Like [`spawn_phasegate`], with extra environment variables.
///
/// # Errors
///
/// As [`spawn_phasegate`].
pub fn spawn_phasegate_env(
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(phasegate_binary()?);
    command.args(args).env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    command.envs(envs.iter().copied());
    Ok(ChildProcess::spawn(name, command)?)
}
