//! Child processes with their output in a log file.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{Error, wait_for};

/// Lines of the log printed when a test panics while the handle lives.
const LOG_TAIL_ON_PANIC: usize = 60;

/// A process started from a [`Command`], stdin closed, stdout and stderr
/// appended to one log file (across restarts). Dropping the handle kills
/// and reaps the process; if the thread is panicking (a failed test), the
/// end of the log is printed first.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    command: Command,
    log: PathBuf,
    /// Holds the log when it lives in a directory of this handle's own.
    _log_dir: Option<TempDir>,
    child: Option<Child>,
    starts: u32,
}

impl ChildProcess {
    /// Starts `command`, its log in a temporary directory of its own that
    /// goes with the handle. `name` names it in errors and diagnostics.
    ///
    /// # Errors
    ///
    /// When the directory cannot be made or the process cannot start.
    pub fn spawn(name: &str, command: Command) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("phasegate-{name}-"))
            .tempdir()
            .map_err(Error::io(format!("create a log directory for {name}")))?;
        let log = dir.path().join("output.log");
        Self::start_new(name, command, log, Some(dir))
    }

    /// Starts `command`, its log at `log`, which outlives the handle (so
    /// that it can be kept for a reader).
    ///
    /// # Errors
    ///
    /// When the log cannot be opened or the process cannot start.
    pub fn spawn_with_log(name: &str, command: Command, log: PathBuf) -> Result<Self, Error> {
        Self::start_new(name, command, log, None)
    }

    fn start_new(
        name: &str,
        command: Command,
        log: PathBuf,
        log_dir: Option<TempDir>,
    ) -> Result<Self, Error> {
        let mut process = Self {
            name: name.to_owned(),
            command,
            log,
            _log_dir: log_dir,
            child: None,
            starts: 0,
        };
        process.start()?;
        Ok(process)
    }

    fn start(&mut self) -> Result<(), Error> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io(format!("open {}", self.log.display())))?;
        let stdout = log
            .try_clone()
            .map_err(Error::io(format!("open {}", self.log.display())))?;
        let child = self
            .command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .map_err(Error::io(format!("start {}", self.name)))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its output (empty when there is none).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its process id, until it is killed or stopped through this handle
    /// (for signals such as `SIGSTOP`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running (`false` once it has exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How it exited, once it has exited by itself; `None` while it runs,
    /// and after [`kill`](Self::kill) or [`terminate`](Self::terminate).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills it at once (`SIGKILL`, as a crash would) and reaps it. Does
    /// nothing when it is not running.
    ///
    /// # Errors
    ///
    /// When it cannot be reaped.
    pub fn kill(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process has already exited: fine.
            let _ = child.kill();
            child
                .wait()
                .map_err(Error::io(format!("reap {}", self.name)))?;
        }
        Ok(())
    }

    /// Sends `SIGTERM` and waits up to `timeout` for it to exit; returns
    /// how it exited. Past the timeout it is killed.
    ///
    /// # Errors
    ///
    /// [`Error::NotRunning`] when it was already killed or stopped,
    /// [`Error::TimedOut`] when it did not exit in time.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let Some(pid) = self.pid() else {
            return Err(Error::NotRunning(self.name.clone()));
        };
        send_signal(pid, "TERM")?;
        let Some(mut child) = self.child.take() else {
            return Err(Error::NotRunning(self.name.clone()));
        };
        let exited = wait_for(
            &format!("{} to exit after SIGTERM", self.name),
            timeout,
            || {
                let status = match child.try_wait() {
                    Ok(Some(status)) => Ok(status),
                    Ok(None) => Err("still running".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                std::future::ready(status)
            },
        )
        .await;
        if exited.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        exited
    }

    /// Kills it if it runs, then starts the same command again, appending
    /// to the same log.
    ///
    /// # Errors
    ///
    /// When it cannot be reaped or started.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill()?;
        self.start()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing to do about a failure here but leave the process to
            // the OS.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} ({}, {} start(s)) ----\n{}\n----",
                self.name,
                self.log.display(),
                self.starts,
                self.log_tail(LOG_TAIL_ON_PANIC)
            );
        }
    }
}

/// `kill -<signal> <pid>`: through the `kill` command, as this workspace
/// forbids the `unsafe` a direct call would need.
fn send_signal(pid: u32, signal: &str) -> Result<(), Error> {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map(drop)
        .map_err(Error::io(format!("send SIG{signal} to {pid}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[tokio::test]
    async fn output_goes_to_the_log_across_restarts() {
        let mut p = ChildProcess::spawn("echo", sh("echo hello; echo oops >&2")).unwrap();
        wait_for("the first run to exit", Duration::from_secs(10), || {
            std::future::ready(p.exit_status().ok_or("running"))
        })
        .await
        .unwrap();
        p.restart().unwrap();
        wait_for("the second run to exit", Duration::from_secs(10), || {
            std::future::ready(p.exit_status().ok_or("running"))
        })
        .await
        .unwrap();
        assert_eq!(p.log_tail(10), "hello\noops\nhello\noops");
        assert_eq!(p.log_tail(1), "oops");
    }

    #[tokio::test]
    async fn terminate_stops_it_and_says_how() {
        let mut p = ChildProcess::spawn("sleeper", sh("exec sleep 30")).unwrap();
        assert!(p.is_running());
        let status = p.terminate(Duration::from_secs(10)).await.unwrap();
        assert!(!status.success() && status.code().is_none(), "{status}");
        assert!(p.pid().is_none() && !p.is_running());
        assert!(matches!(
            p.terminate(Duration::from_secs(1)).await,
            Err(Error::NotRunning(_))
        ));
    }

    #[test]
    fn dropping_the_handle_kills_the_process() {
        let p = ChildProcess::spawn("sleeper", sh("exec sleep 30")).unwrap();
        let proc = format!("/proc/{}", p.pid().unwrap());
        drop(p);
        assert!(!Path::new(&proc).exists(), "{proc} outlived its handle");
    }
}
