//! Test harness of phasegate: real processes, no mocks.
//!
//! [`NatsServer::start`] runs a real `nats-server` with JetStream on a free
//! loopback port, in a fresh temporary directory of its own, and kills it
//! when dropped. The port is learnt from the ports file the server writes
//! (`--ports_file_dir`), never by scraping its log. [`NatsServer::kill`] and
//! [`NatsServer::restart`] (same port, same JetStream store) serve fault
//! tests. [`wait_until`] and [`wait_for`] poll a condition with a deadline:
//! tests never sleep to synchronise.
//!
//! # Which nats-server
//!
//! One variable, [`NATS_SERVER_ENV`] (`PHASEGATE_NATS_SERVER`), holds the
//! path of the binary. Unset, the harness uses
//! `<workspace root>/.tools/bin/nats-server`, which `make tools` (or
//! `scripts/install-nats-server.sh`) installs and `make test` installs
//! first. A version older than [`MIN_NATS_SERVER`] is refused: older
//! servers break JetStream KV under async-nats 0.51.
//!
//! # Diagnosis
//!
//! The server's log goes to `nats-server.log` in its directory; when a
//! test panics while a server is alive, the end of that log is printed
//! with the test's output.

pub mod agent_proc;
pub mod coord;
pub mod fake_agent;
pub mod faults;
pub mod http;
pub mod otlp;
pub mod process;
pub mod rollout;
pub mod secured;

pub use agent_proc::AgentProc;
pub use coord::{CoordEnv, wait_live_agents, wait_live_agents_within};
pub use fake_agent::FakeAgent;
pub use process::{Proc, phasegate_binary};

use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use phasegate_bus::{Client, ConnectOptions};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::time::Instant;

/// The variable that names the `nats-server` binary to test against.
pub const NATS_SERVER_ENV: &str = "PHASEGATE_NATS_SERVER";

/// The oldest `nats-server` (major, minor) the tests accept.
pub const MIN_NATS_SERVER: (u32, u32) = (2, 15);

/// How long a test waits for something that should happen at once: long
/// enough for a loaded 2-core CI machine, short enough to fail visibly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of the server log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// The `nats-server` binary the tests use: [`NATS_SERVER_ENV`] when set,
/// else `<workspace root>/.tools/bin/nats-server`.
///
/// # Errors
///
/// When the binary is missing, with a message that says how to install it.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "{NATS_SERVER_ENV}={} is not a file; point it at a nats-server \
                 binary, or unset it and run `make tools` \
                 (scripts/install-nats-server.sh)",
                path.display()
            );
        }
        return Ok(path);
    }
    let path = workspace_root().join(".tools/bin/nats-server");
    if !path.is_file() {
        bail!(
            "nats-server not found: {NATS_SERVER_ENV} is unset and {} does not exist; \
             run `make test` (which installs it), or `make tools` / \
             scripts/install-nats-server.sh, or set {NATS_SERVER_ENV} to a \
             nats-server binary",
            path.display()
        );
    }
    Ok(path)
}

/// The root of the cargo workspace (this package lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Checks once per process that `binary` is recent enough.
fn check_version(binary: &Path) -> anyhow::Result<()> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let out = Command::new(binary)
                .arg("--version")
                .output()
                .map_err(|e| format!("cannot run {} --version: {e}", binary.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let version = parse_version(&text).ok_or_else(|| {
                format!(
                    "{} --version printed {:?}, not a nats-server version",
                    binary.display(),
                    text.trim()
                )
            })?;
            if version < MIN_NATS_SERVER {
                return Err(format!(
                    "{} is nats-server {}.{}, older than the {}.{} the tests need; \
                     run `make tools` and unset {NATS_SERVER_ENV}",
                    binary.display(),
                    version.0,
                    version.1,
                    MIN_NATS_SERVER.0,
                    MIN_NATS_SERVER.1
                ));
            }
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `(major, minor)` of `nats-server: v2.15.1`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().strip_prefix("nats-server: v")?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What the server writes to `<ports dir>/<executable>_<pid>.ports`.
#[derive(Debug, Deserialize)]
struct PortsFile {
    /// Client URLs: `["nats://127.0.0.1:PORT"]`.
    nats: Vec<String>,
}

/// A `nats-server` with JetStream on a loopback port, in a temporary
/// directory of its own; killed and reaped on drop.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// A configuration file (`-c`), for secured servers.
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts
    /// connections.
    ///
    /// # Errors
    ///
    /// When the binary is missing or too old, or the server does not start
    /// (the error carries the end of its log).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(None).await
    }

    /// Starts a server from configuration file `config` (as `phasegate
    /// auth init` writes: accounts, users, permissions), still on a free
    /// loopback port with a JetStream store of its own.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`].
    pub async fn start_with_config(config: &Path) -> anyhow::Result<Self> {
        Self::start_inner(Some(config.to_path_buf())).await
    }

    async fn start_inner(config: Option<PathBuf>) -> anyhow::Result<Self> {
        let binary = nats_server_binary()?;
        check_version(&binary)?;
        let dir = tempfile::Builder::new()
            .prefix("phasegate-nats-")
            .tempdir()
            .context("cannot create a directory for nats-server")?;
        fs::create_dir(dir.path().join("ports"))?;
        fs::create_dir(dir.path().join("store"))?;
        let mut server = Self {
            binary,
            dir,
            port: 0,
            child: None,
            config,
        };
        server.spawn(None).await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while running (for signals such as `SIGSTOP`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The JetStream store directory, kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log (its stderr, appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A bus client of this server with the default request timeout.
    ///
    /// # Errors
    ///
    /// When the URL is refused (never, for a URL of ours).
    pub async fn client(&self, name: &str) -> anyhow::Result<Client> {
        self.client_with(ConnectOptions::new(self.url(), name))
            .await
    }

    /// A bus client of this server with `opts` (its `url` replaced by the
    /// server's).
    ///
    /// # Errors
    ///
    /// When the URL is refused (never, for a URL of ours).
    pub async fn client_with(&self, opts: ConnectOptions) -> anyhow::Result<Client> {
        let opts = ConnectOptions {
            url: self.url(),
            ..opts
        };
        Ok(phasegate_bus::connect(opts).await?)
    }

    /// Kills the server at once (`SIGKILL`, as a crash would) and reaps it.
    /// Does nothing when it is not running.
    ///
    /// # Errors
    ///
    /// When the process cannot be signalled or reaped.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process has already exited: fine.
            let _ = child.kill();
            child.wait().context("cannot reap nats-server")?;
        }
        Ok(())
    }

    /// Kills the server if it runs, then starts it again on the same port
    /// with the same JetStream store, and waits until it accepts
    /// connections.
    ///
    /// # Errors
    ///
    /// When the server does not come back (the error carries its log).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn(Some(self.port)).await
    }

    /// Spawns the server on `port` (a free one when `None`) and waits for
    /// it to listen.
    async fn spawn(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let ports_dir = self.dir.path().join("ports");
        // A killed server leaves its ports file behind; start clean so that
        // only the new process's file can be found.
        for entry in fs::read_dir(&ports_dir)? {
            fs::remove_file(entry?.path())?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("cannot open the nats-server log")?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut cmd = Command::new(&self.binary);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        let child = cmd
            .args(["-a", "127.0.0.1", "-p", &port_arg, "--ports_file_dir"])
            .arg(&ports_dir)
            .args(["-js", "-sd"])
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let found = loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "nats-server exited with {status} while starting; its log ends with:\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            if let Some(found) = read_port(&ports_dir, pid)
                && tokio::net::TcpStream::connect(("127.0.0.1", found))
                    .await
                    .is_ok()
            {
                break found;
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "nats-server did not listen within {START_TIMEOUT:?}; its log ends with:\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if let Some(wanted) = port
            && wanted != found
        {
            self.kill()?;
            bail!("nats-server restarted on port {found}, not {wanted}");
        }
        self.port = found;
        Ok(())
    }
}

/// The client port from the ports file of process `pid`, once it is
/// complete. The file is named after the executable, which may be a
/// renamed binary, so it is matched by its `_<pid>.ports` suffix.
fn read_port(dir: &Path, pid: u32) -> Option<u16> {
    let suffix = format!("_{pid}.ports");
    let path = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })?;
    // A file read while being written fails to parse: read again later.
    let ports: PortsFile = serde_json::from_reader(File::open(path).ok()?).ok()?;
    let url = ports.nats.first()?;
    url.rsplit_once(':')?.1.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- end of nats-server log ({}) ---\n{}\n---",
                self.log_path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        if let Some(mut child) = self.child.take() {
            // Nothing to do about a failure here but leave the process to
            // the OS; the tempdir goes either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `cond` until it holds, for at most `timeout`.
///
/// # Errors
///
/// When `cond` still does not hold at the deadline; the message says what
/// was expected (`what`).
pub async fn wait_until<F, Fut>(mut cond: F, timeout: Duration, what: &str) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(
        || {
            let ready = cond();
            async move { if ready.await { Ok(()) } else { Err("not yet") } }
        },
        timeout,
        what,
    )
    .await
}

/// Polls `probe` until it returns `Ok`, for at most `timeout`, and returns
/// that value.
///
/// # Errors
///
/// When `probe` still fails at the deadline; the message says what was
/// expected (`what`) and the last failure seen.
pub async fn wait_for<T, E, F, Fut>(
    mut probe: F,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {timeout:?} waiting until {what}; last seen: {last}");
        }
        // Back off from 1 ms to 50 ms: quick when it is quick, without
        // spinning when it is not.
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert!(parse_version("2.9.10").is_none());
        assert!((2, 9) < MIN_NATS_SERVER && (2, 15) >= MIN_NATS_SERVER);
    }

    #[test]
    fn ports_files_are_read_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_port(dir.path(), 42), None);
        fs::write(
            dir.path().join("nats-server_42.ports"),
            r#"{"nats":["nats://127."#,
        )
        .unwrap();
        assert_eq!(
            read_port(dir.path(), 42),
            None,
            "a partial file is not read"
        );
        fs::write(
            dir.path().join("nats-server_42.ports"),
            r#"{"nats":["nats://127.0.0.1:4321"],"monitoring":[]}"#,
        )
        .unwrap();
        assert_eq!(read_port(dir.path(), 42), Some(4321));
        assert_eq!(read_port(dir.path(), 4), None);
    }

    #[tokio::test]
    async fn waits_report_what_was_expected() {
        let err = wait_for(
            || async { Err::<(), _>("still red") },
            Duration::from_millis(20),
            "the light is green",
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("the light is green") && err.contains("still red"),
            "{err}"
        );

        let mut polls = 0;
        wait_until(
            || {
                polls += 1;
                let done = polls >= 3;
                async move { done }
            },
            PATIENCE,
            "the third poll",
        )
        .await
        .unwrap();
        assert_eq!(polls, 3);
    }
}
