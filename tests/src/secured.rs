//! Secured installations for tests: `phasegate auth init` output served by
//! a real nats-server, a probe client that sees the server's permission
//! errors, and TLS material made with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use phasegate_bus::async_nats;
use tempfile::TempDir;
use tokio::sync::mpsc;

use crate::{NatsServer, PATIENCE, phasegate_binary};

/// The output of `phasegate auth init` in a temporary directory.
pub struct AuthDir {
    dir: TempDir,
}

impl AuthDir {
    /// Runs `phasegate auth init <tmp>/auth` with `segments` and
    /// `operators` (`NAME[:ROLE]`).
    pub fn init(segments: &[&str], operators: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("phasegate-auth-")
            .tempdir()?;
        let me = Self { dir };
        me.rerun(segments, operators)?;
        Ok(me)
    }

    /// Runs `auth init` again on the same directory.
    pub fn rerun(&self, segments: &[&str], operators: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new(phasegate_binary()?);
        cmd.args(["auth", "init"]).arg(self.path());
        for s in segments {
            cmd.args(["--segment", s]);
        }
        for o in operators {
            cmd.args(["--operator", o]);
        }
        let out = cmd.output().context("cannot run phasegate auth init")?;
        if !out.status.success() {
            bail!(
                "phasegate auth init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The installation directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("auth")
    }

    /// `<dir>/<file>`.
    pub fn file(&self, file: &str) -> PathBuf {
        self.path().join(file)
    }

    /// The generated server configuration.
    pub fn server_conf(&self) -> PathBuf {
        self.file("nats-server.conf")
    }

    /// A server running the generated configuration.
    pub async fn serve(&self) -> anyhow::Result<NatsServer> {
        Ok(NatsServer::start_with_config(&self.server_conf()).await?)
    }
}

/// The nkey seed of a credentials file.
pub fn seed_of(creds: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(creds)?;
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.contains("BEGIN USER NKEY SEED"));
    lines
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .context("no seed in the credentials file")
}

/// A raw client authenticated with an nkey seed whose server errors
/// (permission violations) arrive on a channel, for asserting what the
/// server refuses.
pub struct Probe {
    /// The client.
    pub nats: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    /// Connects to `url` as the identity of `creds`.
    pub async fn connect(url: &str, creds: &Path) -> anyhow::Result<Self> {
        let (tx, errors) = mpsc::unbounded_channel();
        let nats = async_nats::ConnectOptions::new()
            .nkey(seed_of(creds)?)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(url)
            .await?;
        Ok(Self { nats, errors })
    }

    /// Publishes on `subject` (with `headers`) and waits for the server's
    /// permission violation naming it.
    pub async fn expect_refused(
        &mut self,
        subject: &str,
        headers: async_nats::HeaderMap,
    ) -> anyhow::Result<()> {
        self.nats
            .publish_with_headers(subject.to_owned(), headers, "probe".into())
            .await?;
        self.nats.flush().await?;
        let error = tokio::time::timeout(PATIENCE, self.errors.recv())
            .await
            .with_context(|| format!("no permission violation for {subject}"))?
            .context("the connection closed")?;
        let wanted = format!("Permissions Violation for Publish to \"{subject}\"");
        anyhow::ensure!(
            error.contains(&wanted),
            "publishing on {subject}: expected {wanted:?}, the server said {error:?}"
        );
        Ok(())
    }

    /// Publishes on `subject`, then on `denied` (a subject known to be
    /// refused): the first violation reported must be the second one's,
    /// so the server accepted the first (it handles a connection's
    /// messages in order).
    pub async fn expect_allowed(&mut self, subject: &str, denied: &str) -> anyhow::Result<()> {
        self.nats
            .publish(subject.to_owned(), "probe".into())
            .await?;
        self.expect_refused(denied, async_nats::HeaderMap::new())
            .await
            .with_context(|| format!("{subject} should have been allowed"))
    }
}

/// TLS material: a CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with the `openssl` command.
pub struct Tls {
    dir: TempDir,
}

impl Tls {
    /// Makes the files.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("phasegate-tls-")
            .tempdir()?;
        let me = Self { dir };
        let ca_ext = me.write(
            "ca.ext",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )?;
        me.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ca-key.pem",
        ])?;
        me.openssl(&[
            "req",
            "-new",
            "-key",
            "ca-key.pem",
            "-subj",
            "/CN=phasegate test CA",
            "-out",
            "ca.csr",
        ])?;
        me.openssl(&[
            "x509",
            "-req",
            "-in",
            "ca.csr",
            "-signkey",
            "ca-key.pem",
            "-days",
            "2",
            "-extfile",
            &ca_ext,
            "-out",
            "ca.pem",
        ])?;
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let ext = me.write(&format!("{name}.ext"), ext)?;
            let key = format!("{name}-key.pem");
            let csr = format!("{name}.csr");
            me.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key,
            ])?;
            me.openssl(&[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={name}"),
                "-out",
                &csr,
            ])?;
            me.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &format!("{name}.pem"),
            ])?;
        }
        Ok(me)
    }

    fn write(&self, name: &str, text: &str) -> anyhow::Result<String> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    }

    fn openssl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .context("cannot run openssl")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `<dir>/<file>`: `ca.pem`, `server.pem`, `server-key.pem`,
    /// `client.pem`, `client-key.pem`.
    pub fn file(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// A server configuration beside `conf` that includes it and requires
    /// TLS with verified client certificates (an include is relative to
    /// the including file).
    pub fn server_conf(&self, conf: &Path) -> anyhow::Result<PathBuf> {
        let name = conf.file_name().context("no file name")?;
        let text = format!(
            "include {:?}\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 5\n}}\n",
            name.to_string_lossy(),
            self.file("server.pem").display().to_string(),
            self.file("server-key.pem").display().to_string(),
            self.file("ca.pem").display().to_string(),
        );
        let path = conf.with_file_name("tls.conf");
        std::fs::write(&path, text)?;
        Ok(path)
    }
}
