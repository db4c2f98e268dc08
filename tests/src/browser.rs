//! A real headless Chromium for the web console's tests: Debian's
//! `chromium`, driven by Playwright for Python from the project-local venv
//! (both installed by `scripts/install-chromium.sh`, which `make tools`
//! runs), and `phasegate dashboard` processes to point it at.
//!
//! A browser script (`tests/browser/*.py`) and its test take turns through
//! a line protocol on the script's stdin and stdout: the script prints
//! `STEP <name>` and waits; the test does its part and answers `GO` (with
//! JSON when it has something to say); `PASS <what>` lines report the
//! script's assertions. The script's stderr goes to a log whose tail a
//! failure shows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::http::Http;
use crate::{ChildProcess, PATIENCE, free_port, spawn_phasegate, wait_for, workspace_root};

/// The variable that can name the Chromium binary; unset, `chromium` on
/// `PATH` (Debian's package puts it at /usr/bin/chromium).
pub const CHROMIUM_ENV: &str = "PHASEGATE_CHROMIUM";

/// What a browser test needs: a Python with Playwright, and Chromium.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The venv's interpreter.
    pub python: PathBuf,
    /// The system browser Playwright launches.
    pub chromium: PathBuf,
}

impl Browser {
    /// Finds both, or says how to install them.
    pub fn find() -> anyhow::Result<Self> {
        let hint = "run scripts/install-chromium.sh (make tools does)";
        let python = workspace_root().join(".tools/playwright/bin/python");
        if !python.exists() {
            bail!("{} is missing: {hint}", python.display());
        }
        let chromium = match std::env::var_os(CHROMIUM_ENV) {
            Some(p) => PathBuf::from(p),
            None => which("chromium").with_context(|| format!("no chromium on PATH: {hint}"))?,
        };
        Ok(Self { python, chromium })
    }

    /// Starts `script` with `args` (and `--chromium`).
    pub fn run(&self, script: &Path, args: &[String]) -> anyhow::Result<Script> {
        let log = tempfile::Builder::new()
            .prefix("phasegate-browser-")
            .suffix(".log")
            .tempfile()?
            .into_temp_path()
            .keep()?;
        let mut child = tokio::process::Command::new(&self.python)
            .arg(script)
            .args(args)
            .arg("--chromium")
            .arg(&self.chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.python.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(Script {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            log,
        })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A running browser script.
pub struct Script {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl Script {
    /// Waits at most `patience` for the script's next `STEP`, echoing its
    /// `PASS` lines; fails with the script's log if it ends or errs first.
    pub async fn step(&mut self, name: &str, patience: Duration) -> anyhow::Result<()> {
        loop {
            let line = tokio::time::timeout(patience, self.lines.next_line())
                .await
                .map_err(|_| self.failure(&format!("no STEP {name} within {patience:?}")))?
                .context("reading the script's output")?;
            match line {
                None => return Err(self.failure(&format!("the script ended before STEP {name}"))),
                Some(l) if l == format!("STEP {name}") => return Ok(()),
                Some(l) if l.starts_with("STEP ") => {
                    return Err(self.failure(&format!("expected STEP {name}, got {l}")));
                }
                Some(l) => println!("browser: {l}"),
            }
        }
    }

    /// Lets the script go on, telling it `data` (JSON) when given.
    pub async fn go(&mut self, data: Option<serde_json::Value>) -> anyhow::Result<()> {
        let line = match data {
            Some(d) => format!("GO {d}\n"),
            None => "GO\n".to_owned(),
        };
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Waits at most `patience` for the script to end, and wants success.
    pub async fn finish(mut self, patience: Duration) -> anyhow::Result<()> {
        let rest = async {
            while let Some(l) = self.lines.next_line().await? {
                println!("browser: {l}");
            }
            self.child.wait().await
        };
        let status = tokio::time::timeout(patience, rest)
            .await
            .map_err(|_| self.failure(&format!("the script did not end within {patience:?}")))??;
        if !status.success() {
            return Err(self.failure(&format!("the script failed ({status})")));
        }
        Ok(())
    }

    fn failure(&self, what: &str) -> anyhow::Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::anyhow!(
            "{what}; the script's stderr ({}):\n{}",
            self.log.display(),
            tail.join("\n")
        )
    }
}

/// A `phasegate dashboard` process on a free loopback port.
pub struct DashboardProc {
    /// The process.
    pub proc: ChildProcess,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl DashboardProc {
    /// Starts a console on `nats_url` with the credentials file `creds`
    /// (none: open), polling every `poll_ms`; waits until it answers.
    pub async fn start(
        name: &str,
        nats_url: &str,
        creds: Option<&Path>,
        poll_ms: u64,
    ) -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let (listen, poll) = (addr.to_string(), poll_ms.to_string());
        let creds = creds.map(|p| p.display().to_string());
        let mut args = vec![
            "dashboard",
            "--nats-url",
            nats_url,
            "--listen",
            &listen,
            "--poll-ms",
            &poll,
        ];
        if let Some(c) = &creds {
            args.extend(["--nats-creds", c]);
        }
        let proc = spawn_phasegate(name, &args)?;
        let http = Http::default();
        wait_for("the dashboard to answer", PATIENCE, || async {
            http.get(addr, "/api/session").await
        })
        .await?;
        Ok(Self { proc, addr })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
