//! How a connection proves who it is and protects its traffic (SPEC.md
//! §8): a credentials file, credentials in the URL, TLS with a custom CA
//! and a client certificate.
//!
//! Secrets (passwords, tokens, nkey seeds) are read here and handed to
//! `async-nats` as options, never as part of a URL: URLs are logged (by
//! `async-nats` at debug level too), options are not. No error of this
//! module carries a secret.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::BusError;

/// The security settings of a connection, one set per program: every
/// program (coordinator, agent, operator commands) takes the same flags
/// (`--nats-creds`, `--tls-ca`, `--tls-cert`, `--tls-key`) and config
/// keys, and they all end up here.
///
/// Empty (the default): no credentials beyond those in the URL, and TLS
/// only when the URL says `tls://` or the server requires it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// A NATS credentials file: a user JWT and its nkey seed (decentralised
    /// auth), or only a `USER NKEY SEED` block (an nkey user of the
    /// server's configuration, as `phasegate auth init` writes).
    #[serde(default)]
    pub creds: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the server's certificate.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of this client's certificate (with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of this client's private key (with `tls_cert`).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Security {
    /// From a configuration file's four keys (`nats_creds`, `tls_ca`,
    /// `tls_cert`, `tls_key`), which every program's file names alike.
    pub fn from_files(
        creds: &Option<PathBuf>,
        tls_ca: &Option<PathBuf>,
        tls_cert: &Option<PathBuf>,
        tls_key: &Option<PathBuf>,
    ) -> Self {
        Self {
            creds: creds.clone(),
            tls_ca: tls_ca.clone(),
            tls_cert: tls_cert.clone(),
            tls_key: tls_key.clone(),
        }
    }

    /// Whether any TLS option is set: then TLS is required.
    pub fn wants_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.creds.is_none() && !self.wants_tls()
    }

    /// Each field of `self`, else the same field of `fallback`: flags over
    /// the config file.
    #[must_use]
    pub fn or(self, fallback: Security) -> Security {
        Security {
            creds: self.creds.or(fallback.creds),
            tls_ca: self.tls_ca.or(fallback.tls_ca),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
        }
    }

    /// Checks what can be checked without connecting: a certificate comes
    /// with its key, and every file named exists.
    ///
    /// # Errors
    ///
    /// [`BusError::Security`] naming the option and the fix.
    pub fn check(&self) -> Result<(), BusError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(security(
                    "--tls-cert needs --tls-key (the client's private key)",
                ));
            }
            (None, Some(_)) => {
                return Err(security(
                    "--tls-key needs --tls-cert (the client's certificate)",
                ));
            }
            _ => {}
        }
        for (what, path) in [
            ("--nats-creds", &self.creds),
            ("--tls-ca", &self.tls_ca),
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(security(format!(
                    "{what}: {} is not a file",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

fn security(message: impl Into<String>) -> BusError {
    BusError::Security(message.into())
}

/// What a credentials file holds.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Creds {
    /// A user JWT and its seed: handed to `async-nats` whole.
    Jwt(String),
    /// Only an nkey seed: an nkey user of the server's configuration.
    Seed(String),
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the contents: they are secrets.
        match self {
            Self::Jwt(_) => f.write_str("Creds::Jwt(***)"),
            Self::Seed(_) => f.write_str("Creds::Seed(***)"),
        }
    }
}

const JWT_BLOCK: &str = "NATS USER JWT";
const SEED_BLOCK: &str = "USER NKEY SEED";

/// Reads a credentials file.
///
/// # Errors
///
/// [`BusError::Security`] naming the file (never its contents) when it
/// cannot be read or holds neither a JWT nor a seed block.
pub(crate) fn read_creds(path: &Path) -> Result<Creds, BusError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        security(format!(
            "cannot read credentials file {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    parse_creds(&text)
        .map_err(|why| security(format!("credentials file {}: {why}", path.display())))
}

/// Parses the standard NATS credentials format; the error says what is
/// missing, never what is there.
pub(crate) fn parse_creds(text: &str) -> Result<Creds, &'static str> {
    let seed = block(text, SEED_BLOCK)
        .ok_or("no `-----BEGIN USER NKEY SEED-----` block: not a NATS credentials file")?;
    if !seed.starts_with("SU") {
        return Err("the nkey seed block does not hold a user seed (SU…)");
    }
    if block(text, JWT_BLOCK).is_some() {
        Ok(Creds::Jwt(text.to_owned()))
    } else {
        Ok(Creds::Seed(seed.to_owned()))
    }
}

/// The one line between `-----BEGIN <name>-----` and the next `-----`
/// line.
fn block<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("BEGIN {name}");
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("---") && l.contains(&begin))?;
    let value = lines.find(|l| !l.is_empty())?;
    (!value.starts_with("---")).then_some(value)
}

/// Credentials found in a URL's authority.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum UrlAuth {
    /// `user:pass@`.
    UserPassword(String, String),
    /// `token@`.
    Token(String),
}

impl std::fmt::Debug for UrlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
            Self::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// Splits the credentials off a comma-separated server list: the
/// addresses without them (what `async-nats` is given, and may log), and
/// the credentials (the same on every server that carries some).
///
/// # Errors
///
/// [`BusError::Security`] when two servers carry different credentials.
pub(crate) fn split_url_auth(url: &str) -> Result<(Vec<String>, Option<UrlAuth>), BusError> {
    let mut servers = Vec::new();
    let mut auth: Option<UrlAuth> = None;
    for server in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scheme, userinfo, host) = split_server(server);
        let Some(userinfo) = userinfo else {
            servers.push(server.to_owned());
            continue;
        };
        let found = match userinfo.split_once(':') {
            Some((user, pass)) => UrlAuth::UserPassword(percent_decode(user), percent_decode(pass)),
            None => UrlAuth::Token(percent_decode(userinfo)),
        };
        match &auth {
            Some(known) if *known != found => {
                return Err(security(format!(
                    "the servers of {} carry different credentials: give one set",
                    redact_url(url)
                )));
            }
            _ => auth = Some(found),
        }
        servers.push(format!("{scheme}{host}"));
    }
    Ok((servers, auth))
}

/// `url` (a comma-separated list of server addresses) with every user
/// name, password or token replaced by `***`, fit for logs and errors:
/// `nats://user:pass@host:4222` → `nats://***@host:4222`.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|server| match split_server(server) {
            (scheme, Some(_), host) => format!("{scheme}***@{host}"),
            (_, None, _) => server.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One server address taken apart: its scheme (`nats://`, or nothing),
/// the credentials, if any, and what follows them. The authority ends at
/// the first `/`, `?` or `#`; credentials are what comes before its last
/// `@`.
fn split_server(server: &str) -> (&str, Option<&str>, &str) {
    let (scheme, rest) = match server.find("://") {
        Some(i) => server.split_at(i + 3),
        None => ("", server),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => (scheme, Some(&rest[..at]), &rest[at + 1..]),
        None => (scheme, None, rest),
    }
}

/// `%XX` escapes decoded (as URLs carry a password holding `@` or `:`);
/// anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    const SEED: &str = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";

    #[test]
    fn credentials_files_are_jwt_or_seed_only() {
        let seed_only =
            format!("-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n");
        assert_eq!(parse_creds(&seed_only), Ok(Creds::Seed(SEED.to_owned())));
        let jwt = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAi.x.y\n------END NATS USER JWT------\n\n\
             ******** IMPORTANT ********\n\n{seed_only}"
        );
        assert_eq!(parse_creds(&jwt), Ok(Creds::Jwt(jwt.clone())));
        assert!(parse_creds("nothing here").is_err());
        assert!(
            parse_creds("-----BEGIN USER NKEY SEED-----\nUABC\n------END------\n").is_err(),
            "a public key is not a seed"
        );
        let err = parse_creds("-----BEGIN USER NKEY SEED-----\nSXsecretX\n").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert_eq!(
            format!("{:?}", Creds::Seed(SEED.into())),
            "Creds::Seed(***)"
        );
    }

    #[test]
    fn credentials_never_survive_redaction() {
        for (url, want) in [
            (
                "nats://user:secret@127.0.0.1:4222",
                "nats://***@127.0.0.1:4222",
            ),
            ("nats://s3cr3t-token@host:4222", "nats://***@host:4222"),
            ("tls://a:b@h1:1,nats://h2:2", "tls://***@h1:1,nats://h2:2"),
            ("u:p@host:4222", "***@host:4222"),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("nats://h:1/x@y", "nats://h:1/x@y"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn urls_lose_their_credentials_to_options() {
        let (servers, auth) = split_url_auth("nats://alice:s%40cret@127.0.0.1:4222").unwrap();
        assert_eq!(servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(
            auth,
            Some(UrlAuth::UserPassword("alice".into(), "s@cret".into()))
        );
        let (servers, auth) = split_url_auth("tok@h1:1, nats://tok@h2:2").unwrap();
        assert_eq!(servers, ["h1:1", "nats://h2:2"]);
        assert_eq!(auth, Some(UrlAuth::Token("tok".into())));
        let (servers, auth) = split_url_auth("nats://h:1,nats://h:2").unwrap();
        assert_eq!(servers, ["nats://h:1", "nats://h:2"]);
        assert_eq!(auth, None);
        let err = split_url_auth("nats://a:pw1@h:1,nats://a:pw2@h:2").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(
            !format!("{auth:?}", auth = UrlAuth::Token("tok".into())).contains("tok"),
            "debug output hides tokens"
        );
    }

    #[test]
    fn tls_options_are_checked_before_connecting() {
        let dir = std::env::temp_dir();
        let cert_only = Security {
            tls_cert: Some(dir.clone()),
            ..Security::default()
        };
        assert!(cert_only.check().is_err());
        let missing = Security {
            tls_ca: Some(dir.join("no-such-ca.pem")),
            ..Security::default()
        };
        let err = missing.check().unwrap_err().to_string();
        assert!(
            err.contains("--tls-ca") && err.contains("no-such-ca.pem"),
            "{err}"
        );
        assert!(missing.wants_tls() && !Security::default().wants_tls());
        let flags = Security {
            creds: Some("a".into()),
            ..Security::default()
        };
        let file = Security {
            creds: Some("b".into()),
            tls_ca: Some("ca".into()),
            ..Security::default()
        };
        let both = flags.or(file);
        assert_eq!(both.creds, Some("a".into()));
        assert_eq!(both.tls_ca, Some("ca".into()));
    }
}
