//! Which `nats-server` to run, and running it on a free loopback port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::{ChildProcess, Error, wait_for, workspace_root};

/// The variable that names the `nats-server` binary to run.
pub const NATS_SERVER_ENV: &str = "PHASEGATE_NATS_SERVER";

/// The oldest `nats-server` (major, minor) the kit runs: older servers
/// break JetStream KV under async-nats 0.51.
pub const MIN_NATS_SERVER: (u32, u32) = (2, 15);

/// Where `make tools` (`scripts/install-nats-server.sh`) installs the
/// pinned server, below the workspace root.
const PROJECT_LOCAL: &str = ".tools/bin/nats-server";

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Lines of the server log an error carries.
const LOG_TAIL_LINES: usize = 40;

/// The `nats-server` binary to run, the first of:
///
/// 1. the file [`NATS_SERVER_ENV`] names, when it is set;
/// 2. the project-local `.tools/bin/nats-server` below the working
///    directory, below any directory above the running executable (a
///    cargo build lives in `<root>/target/<profile>/`), or below the
///    workspace this crate was built in;
/// 3. `nats-server` on `PATH`.
///
/// Its version is checked when a [`NatsServer`] starts, not here.
///
/// # Errors
///
/// [`Error::NatsServerBinary`] when the variable names no file, or no
/// binary is found; the message says how to install one.
pub fn nats_server_binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(Error::NatsServerBinary(format!(
                "{NATS_SERVER_ENV}={} is not a file; point it at a nats-server \
                 binary, or unset it and run `make tools` \
                 (scripts/install-nats-server.sh)",
                path.display()
            )));
        }
        return Ok(path);
    }
    let project_local = project_roots()
        .into_iter()
        .map(|root| root.join(PROJECT_LOCAL))
        .find(|path| path.is_file());
    project_local.or_else(on_path).ok_or_else(|| {
        Error::NatsServerBinary(format!(
            "nats-server not found: {NATS_SERVER_ENV} is unset, there is no {PROJECT_LOCAL} \
             in the working directory, above the executable or in {}, and none on PATH; \
             run `make tools` (scripts/install-nats-server.sh), or set {NATS_SERVER_ENV} \
             to a nats-server binary",
            workspace_root().display()
        ))
    })
}

/// Where a project-local server may be: the working directory, every
/// directory above the running executable, the workspace built in.
fn project_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.push(workspace_root());
    roots
}

/// `nats-server` in a directory of `PATH`.
fn on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

/// Checks once per process that `binary` is recent enough.
fn check_version(binary: &Path) -> Result<(), Error> {
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
                    "{} is nats-server {}.{}, older than the {}.{} phasegate needs; \
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
        .map_err(Error::NatsServerBinary)
}

/// `(major, minor)` of `nats-server: v2.15.1`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().strip_prefix("nats-server: v")?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// How to run a [`NatsServer`] besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// A configuration file (`-c`), as `phasegate auth init` writes
    /// (accounts, users, permissions). The address, port and store the kit
    /// passes on the command line win over the file's.
    pub config: Option<PathBuf>,
    /// The directory of the server's log (`nats-server.log`), ports file
    /// (`ports/`) and JetStream store (`store/`), left in place after the
    /// server. `None`: a temporary directory that goes with the handle.
    pub dir: Option<PathBuf>,
}

/// A `nats-server` with JetStream on a loopback port with a store of its
/// own, killed on drop. The port is learnt from the ports file the server
/// writes (`--ports_file_dir`), never by scraping its log.
#[derive(Debug)]
pub struct NatsServer {
    // Declared first so that it is dropped first: the server dies before
    // its temporary directory goes, and its log is still there to print.
    process: ChildProcess,
    port: u16,
    binary: PathBuf,
    config: Option<PathBuf>,
    dir: PathBuf,
    _temp_dir: Option<TempDir>,
}

/// What a starting server did.
enum Started {
    Listening(u16),
    Exited(ExitStatus),
}

impl NatsServer {
    /// Starts a server on a free port in a temporary directory and waits
    /// until it accepts connections.
    ///
    /// # Errors
    ///
    /// When the binary is missing or too old, or the server does not start
    /// (the error carries the end of its log).
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(NatsServerOptions::default()).await
    }

    /// Starts a server from configuration file `config`, still on a free
    /// loopback port with a JetStream store of its own.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`].
    pub async fn start_with_config(config: &Path) -> Result<Self, Error> {
        Self::start_with(NatsServerOptions {
            config: Some(config.to_path_buf()),
            ..NatsServerOptions::default()
        })
        .await
    }

    /// Starts a server as `options` say.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`].
    pub async fn start_with(options: NatsServerOptions) -> Result<Self, Error> {
        let binary = nats_server_binary()?;
        check_version(&binary)?;
        let (dir, temp_dir) = match options.dir {
            Some(dir) => (dir, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("phasegate-nats-")
                    .tempdir()
                    .map_err(Error::io("create a directory for nats-server"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        for sub in ["ports", "store"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(Error::io(format!("create {}", path.display())))?;
        }
        let (process, port) = launch(&binary, options.config.as_deref(), &dir, None).await?;
        Ok(Self {
            process,
            port,
            binary,
            config: options.config,
            dir,
            _temp_dir: temp_dir,
        })
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
        self.process.pid()
    }

    /// The JetStream store directory, kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The server's log, appended to across restarts.
    pub fn log_path(&self) -> PathBuf {
        log_path(&self.dir)
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Kills the server at once (`SIGKILL`, as a crash would) and reaps it.
    /// Does nothing when it is not running.
    ///
    /// # Errors
    ///
    /// When the process cannot be reaped.
    pub fn kill(&mut self) -> Result<(), Error> {
        self.process.kill()
    }

    /// Stops the server cleanly (`SIGTERM`), for at most `timeout`; returns
    /// how it exited.
    ///
    /// # Errors
    ///
    /// As [`ChildProcess::terminate`].
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.process.terminate(timeout).await
    }

    /// Kills the server if it runs, then starts it again on the same port
    /// with the same JetStream store, and waits until it accepts
    /// connections.
    ///
    /// # Errors
    ///
    /// When the server does not come back (the error carries its log).
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.process.kill()?;
        let (process, _) = launch(
            &self.binary,
            self.config.as_deref(),
            &self.dir,
            Some(self.port),
        )
        .await?;
        self.process = process;
        Ok(())
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("nats-server.log")
}

/// Starts `binary` in `dir` on `port` (a free one when `None`) and waits
/// until it listens; returns the process and its port.
async fn launch(
    binary: &Path,
    config: Option<&Path>,
    dir: &Path,
    port: Option<u16>,
) -> Result<(ChildProcess, u16), Error> {
    let ports_dir = dir.join("ports");
    // A killed server leaves its ports file behind; start clean so that
    // only the new process's file can be found.
    fs::read_dir(&ports_dir)
        .and_then(|mut entries| entries.try_for_each(|e| fs::remove_file(e?.path())))
        .map_err(Error::io(format!("clear {}", ports_dir.display())))?;
    let mut command = Command::new(binary);
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    command
        .args(["-a", "127.0.0.1", "-p", &port_arg, "--ports_file_dir"])
        .arg(&ports_dir)
        .args(["-js", "-sd"])
        .arg(dir.join("store"));
    let mut process = ChildProcess::spawn_with_log("nats-server", command, log_path(dir))?;
    let pid = process.pid().unwrap_or_default();
    let started = wait_for("its ports file and port", START_TIMEOUT, || {
        let exited = process.exit_status();
        let found = read_port(&ports_dir, pid);
        async move {
            if let Some(status) = exited {
                return Ok::<_, &str>(Started::Exited(status));
            }
            let found = found.ok_or("no complete ports file yet")?;
            tokio::net::TcpStream::connect(("127.0.0.1", found))
                .await
                .map_err(|_| "the port in its ports file refuses connections")?;
            Ok(Started::Listening(found))
        }
    })
    .await;
    let failed = |what: String| Error::NatsServerStart {
        what,
        log_tail: process.log_tail(LOG_TAIL_LINES),
    };
    match started {
        Ok(Started::Listening(found)) if port.is_none_or(|wanted| wanted == found) => {
            Ok((process, found))
        }
        Ok(Started::Listening(found)) => Err(failed(format!(
            "restarted on port {found}, not {}",
            port.unwrap_or_default()
        ))),
        Ok(Started::Exited(status)) => Err(failed(format!("exited with {status} while starting"))),
        Err(e) => Err(failed(format!("did not start: {e}"))),
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
    let text = fs::read_to_string(path).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    // Client URLs: `{"nats": ["nats://127.0.0.1:PORT"], ...}`.
    let url = ports.get("nats")?.get(0)?.as_str()?;
    url.rsplit_once(':')?.1.parse().ok()
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
}
