//! The `phasegate` binary as a real child process, with its log in a file.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

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

/// A running `phasegate` process.
pub struct Proc {
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<Child>,
    dir: TempDir,
    starts: u32,
}

impl Proc {
    /// Starts `phasegate <args>`; its stdout and stderr go to a log file.
    pub fn spawn(name: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_env(name, args, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_env(name: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut p = Self {
            name: name.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            dir: tempfile::Builder::new()
                .prefix(&format!("phasegate-{name}-"))
                .tempdir()?,
            starts: 0,
        };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(phasegate_binary()?);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("cannot start {}", self.name))?,
        );
        Ok(())
    }

    /// Where its output goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("output.log")
    }

    /// A directory that lives as long as this process handle.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `n` lines of its output.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; returns its status.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("{} is not running", self.name);
        };
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                c.kill()?;
                c.wait()?;
                bail!(
                    "{} did not stop within {timeout:?} after SIGTERM",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts it again with the same arguments (after [`Proc::kill9`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.start()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} ({} start(s)) ----\n{}",
                self.name,
                self.starts,
                self.log_tail(60)
            );
        }
    }
}
