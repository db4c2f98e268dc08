//! Connecting, and the requesting side of request/reply.

use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Event, HeaderMap, Message, RequestErrorKind};
use bytes::Bytes;
use phasegate_proto::{Command, Encoding, Reply, Subjects, decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BusError;
use crate::headers::headers_for;
use crate::security::{Creds, Security, UrlAuth, read_creds, redact_url, split_url_auth};

/// How long a request waits for its reply unless configured otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`connect`] does when NATS cannot be reached at first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialConnect {
    /// Return at once and keep trying in the background: servers, which
    /// may start before NATS.
    #[default]
    Retry,
    /// Fail with the cause: operator commands, which must say at once
    /// that NATS is out of reach.
    FailFast,
}

/// How to reach NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Server address(es), comma-separated: `nats://127.0.0.1:4222`, with
    /// optional credentials (`nats://user:pass@host`, `nats://token@host`).
    pub url: String,
    /// Connection name shown by the server (`connz`) and in our logs.
    pub name: String,
    /// How long [`Client::request`] waits for a reply.
    pub request_timeout: Duration,
    /// Subjects of the command API (their prefix is configurable).
    pub subjects: Subjects,
    /// Whether a first connection that fails is retried.
    pub initial_connect: InitialConnect,
    /// Credentials file and TLS (SPEC.md §8); credentials in `url` are
    /// honoured too.
    pub security: Security,
    /// The JetStream domain whose buckets this connection uses; `None`:
    /// the JetStream of the server connected to (or of its cluster). A
    /// client of a leaf node names the hub's domain (`jetstream { domain:
    /// hub }` in the hub's configuration) to reach the hub's buckets
    /// through the leaf.
    pub js_domain: Option<String>,
}

impl ConnectOptions {
    /// Options for `url` with connection name `name`, the default request
    /// timeout and the default subject prefix.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: name.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            subjects: Subjects::default(),
            initial_connect: InitialConnect::Retry,
            security: Security::default(),
            js_domain: None,
        }
    }

    /// The same options using the buckets of JetStream domain `domain`
    /// (`None`: the local JetStream).
    #[must_use]
    pub fn with_js_domain(mut self, domain: Option<String>) -> Self {
        self.js_domain = domain;
        self
    }

    /// The same options with credentials and TLS settings.
    #[must_use]
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// The same options, failing at once when NATS cannot be reached
    /// instead of retrying in the background.
    #[must_use]
    pub fn fail_fast(mut self) -> Self {
        self.initial_connect = InitialConnect::FailFast;
        self
    }

    /// The same options with another request timeout.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The same options with other subjects.
    #[must_use]
    pub fn with_subjects(mut self, subjects: Subjects) -> Self {
        self.subjects = subjects;
        self
    }
}

/// A connection to NATS plus the subjects of the command API.
///
/// Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    nats: async_nats::Client,
    subjects: Subjects,
    request_timeout: Duration,
    js_domain: Option<String>,
}

/// Connects to NATS.
///
/// With [`InitialConnect::Retry`] it returns at once: the connection is
/// made in the background and retried until it succeeds, so a process may
/// start before its server. With [`InitialConnect::FailFast`] it tries the
/// servers once and fails with the cause. Once up, a lost connection is
/// re-established forever, with its subscriptions. Requests made meanwhile
/// wait at most the request timeout. Disconnects and reconnects are logged
/// through `tracing`.
///
/// # Errors
///
/// [`BusError::Security`] when the credentials file or TLS settings cannot
/// be used (checked before any attempt, so a server does not retry a
/// hopeless configuration forever); [`BusError::Connect`] when the address
/// cannot be parsed, or (fail-fast) when no server can be reached or the
/// server refuses the credentials; its URL has credentials redacted.
///
/// Credentials in the URL (`nats://user:pass@host`, `nats://token@host`)
/// are taken off it and given to `async-nats` as options (which ignores
/// them in URLs): no address that is logged carries a secret.
pub async fn connect(opts: ConnectOptions) -> Result<Client, BusError> {
    let name = opts.name.clone();
    let (servers, nats_opts) = nats_options(&opts)?;
    let mut nats_opts = nats_opts.name(&opts.name);
    if opts.initial_connect == InitialConnect::Retry {
        nats_opts = nats_opts.retry_on_initial_connect();
    }
    let nats = nats_opts
        .max_reconnects(None)
        .request_timeout(Some(opts.request_timeout))
        .event_callback(move |event| {
            let name = name.clone();
            async move { log_event(&name, &event) }
        })
        .connect(servers)
        .await
        .map_err(|source| BusError::Connect {
            url: redact_url(&opts.url),
            source,
        })?;
    Ok(Client {
        nats,
        subjects: opts.subjects,
        request_timeout: opts.request_timeout,
        js_domain: opts.js_domain,
    })
}

/// The server addresses, without credentials, and the `async-nats`
/// options that carry the credentials and TLS settings instead.
fn nats_options(
    opts: &ConnectOptions,
) -> Result<(Vec<String>, async_nats::ConnectOptions), BusError> {
    let sec = &opts.security;
    sec.check()?;
    let (servers, url_auth) = split_url_auth(&opts.url)?;
    let mut nats_opts = async_nats::ConnectOptions::new();
    match (url_auth, &sec.creds) {
        (Some(_), Some(_)) => {
            return Err(BusError::Security(format!(
                "both --nats-creds and credentials in the URL {}: give one",
                redact_url(&opts.url)
            )));
        }
        (Some(UrlAuth::UserPassword(user, pass)), None) => {
            nats_opts = nats_opts.user_and_password(user, pass);
        }
        (Some(UrlAuth::Token(token)), None) => nats_opts = nats_opts.token(token),
        (None, Some(path)) => {
            nats_opts = match read_creds(path)? {
                Creds::Seed(seed) => nats_opts.nkey(seed),
                Creds::Jwt(text) => nats_opts.credentials(&text).map_err(|e| {
                    // The message of async-nats names what it could not
                    // parse, never the contents.
                    BusError::Security(format!("credentials file {}: {e}", path.display()))
                })?,
            };
        }
        (None, None) => {
            // Servers (which retry) say it once at startup; operator
            // commands stay quiet.
            if opts.initial_connect == InitialConnect::Retry {
                tracing::warn!(
                    connection = %opts.name,
                    "no NATS credentials: running open, anyone who reaches NATS may do anything \
                     (see `phasegate auth init` for a secured installation)"
                );
            }
        }
    }
    if sec.wants_tls() {
        nats_opts = nats_opts.require_tls(true);
    }
    if let Some(ca) = &sec.tls_ca {
        nats_opts = nats_opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&sec.tls_cert, &sec.tls_key) {
        nats_opts = nats_opts.add_client_certificate(cert.clone(), key.clone());
    }
    Ok((servers, nats_opts))
}

fn log_event(name: &str, event: &Event) {
    match event {
        Event::Connected => tracing::info!(connection = name, "nats connected"),
        Event::Disconnected => tracing::warn!(connection = name, "nats disconnected"),
        Event::Closed => tracing::info!(connection = name, "nats connection closed"),
        Event::LameDuckMode | Event::SlowConsumer(_) | Event::ServerError(_) => {
            tracing::warn!(connection = name, %event, "nats event");
        }
        Event::ClientError(_) => tracing::warn!(connection = name, %event, "nats client error"),
        Event::Draining => tracing::info!(connection = name, "nats connection draining"),
    }
}

impl Client {
    /// The underlying `async-nats` client, for what this crate does not
    /// wrap (subscriptions, the service API).
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// A JetStream context on this connection (KV buckets, streams), in
    /// the connection's JetStream domain if it names one.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        match &self.js_domain {
            Some(domain) => async_nats::jetstream::with_domain(self.nats.clone(), domain),
            None => async_nats::jetstream::new(self.nats.clone()),
        }
    }

    /// The subjects of the command API.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// How long a request waits for its reply.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.nats.connection_state() == State::Connected
    }

    /// A round trip through the server; returns how long it took.
    ///
    /// Once it returns, the server has processed everything this client
    /// sent before, subscriptions included: the way to know that a
    /// service's subscription is in place before announcing it.
    /// (`async_nats::Client::flush` only writes to the socket and gives no
    /// such guarantee.) It asks on a fresh inbox subject that nobody serves
    /// and takes the server's "no responders" as the answer.
    ///
    /// # Errors
    ///
    /// [`BusError::TimedOut`] when the server does not answer within the
    /// request timeout (not connected), [`BusError::Request`] when the
    /// connection fails.
    pub async fn ping(&self) -> Result<Duration, BusError> {
        let started = Instant::now();
        let subject = self.nats.new_inbox();
        match self
            .request_bytes(&subject, HeaderMap::new(), Bytes::new())
            .await
        {
            Ok(_) | Err(BusError::NoResponders { .. }) => Ok(started.elapsed()),
            Err(e) => Err(e),
        }
    }

    /// Sends `req` to `command` in `encoding` and returns the result of the
    /// reply envelope.
    ///
    /// A JSON request carries `Content-Type: application/json`; the reply
    /// is read in the request's encoding, as the contract says it answers.
    ///
    /// # Errors
    ///
    /// [`BusError::Api`] when the service answers `ok: false`;
    /// [`BusError::NoResponders`] when no service listens;
    /// [`BusError::TimedOut`] when none answers in time; [`BusError::Encode`]
    /// or [`BusError::Decode`] for bodies that do not fit the codec.
    pub async fn request<Req, Res>(
        &self,
        command: Command,
        req: &Req,
        encoding: Encoding,
    ) -> Result<Res, BusError>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        let subject = self.subjects.command(command);
        let body = encode(encoding, req).map_err(BusError::Encode)?;
        let mut headers = headers_for(encoding);
        crate::trace::inject_current(&mut headers);
        let reply = self.request_bytes(&subject, headers, body).await?;
        decode_reply(encoding, &subject, &reply.payload)
    }

    /// Sends raw bytes with `headers` (none when empty) to `subject` and
    /// returns the raw reply: for callers that need to send what the codec
    /// would refuse to produce, such as malformed bodies.
    ///
    /// # Errors
    ///
    /// [`BusError::NoResponders`], [`BusError::TimedOut`], or
    /// [`BusError::Request`] for other failures.
    pub async fn request_bytes(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> Result<Message, BusError> {
        let payload = payload.into();
        let sent = if headers.is_empty() {
            self.nats.request(subject.to_owned(), payload).await
        } else {
            self.nats
                .request_with_headers(subject.to_owned(), headers, payload)
                .await
        };
        sent.map_err(|source| {
            tracing::debug!(subject, error = %source, "request failed");
            match source.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders {
                    subject: subject.to_owned(),
                },
                RequestErrorKind::TimedOut => BusError::TimedOut {
                    subject: subject.to_owned(),
                    timeout: self.request_timeout,
                },
                _ => BusError::Request {
                    subject: subject.to_owned(),
                    source,
                },
            }
        })
    }
}

/// Decodes a reply envelope and unwraps its result.
fn decode_reply<Res: DeserializeOwned>(
    encoding: Encoding,
    subject: &str,
    payload: &[u8],
) -> Result<Res, BusError> {
    let reply: Reply<Res> = decode(encoding, payload).map_err(|source| BusError::Decode {
        subject: subject.to_owned(),
        source,
    })?;
    Ok(reply.into_result()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use phasegate_proto::{ApiError, ErrorCode};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Echo {
        name: String,
    }

    #[test]
    fn replies_unwrap_to_results_or_api_errors() {
        for encoding in [Encoding::MsgPack, Encoding::Json] {
            let ok = encode(encoding, &Reply::ok(Echo { name: "a".into() })).unwrap();
            let echo: Echo = decode_reply(encoding, "s", &ok).unwrap();
            assert_eq!(echo.name, "a");

            let refused =
                encode(encoding, &Reply::<Echo>::err(ApiError::conflict("busy"))).unwrap();
            let err = decode_reply::<Echo>(encoding, "s", &refused).unwrap_err();
            assert!(
                matches!(&err, BusError::Api(e) if e.code == ErrorCode::Conflict),
                "{err}"
            );

            let err = decode_reply::<Echo>(encoding, "s", b"\xc1 not a reply").unwrap_err();
            assert!(matches!(err, BusError::Decode { .. }), "{err}");
        }
    }

    #[test]
    fn options_default_to_the_contract() {
        let opts = ConnectOptions::new("nats://127.0.0.1:4222", "test");
        assert_eq!(opts.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(opts.subjects, Subjects::default());
        let opts = opts.with_request_timeout(Duration::from_millis(5));
        assert_eq!(opts.request_timeout, Duration::from_millis(5));
    }

    #[test]
    fn server_lists_become_addresses_without_credentials() {
        use async_nats::ToServerAddrs;
        let opts = ConnectOptions::new(
            "nats://u:pw@127.0.0.1:45001, nats://u:pw@127.0.0.1:45002,tls://u:pw@h3:45003",
            "test",
        );
        let (servers, _) = nats_options(&opts).unwrap();
        assert_eq!(
            servers,
            [
                "nats://127.0.0.1:45001",
                "nats://127.0.0.1:45002",
                "tls://h3:45003"
            ]
        );
        // What async-nats is given parses, one address per server (a
        // comma-separated string does not: "invalid port number").
        let addrs: Vec<_> = servers.to_server_addrs().unwrap().collect();
        assert_eq!(addrs.len(), 3);
        assert!("nats://a:1,nats://b:2".to_server_addrs().is_err());
        for shown in [redact_url(&opts.url), format!("{servers:?}")] {
            assert!(!shown.contains("pw") && !shown.contains("u:"), "{shown}");
        }
        assert_eq!(
            redact_url(&opts.url),
            "nats://***@127.0.0.1:45001, nats://***@127.0.0.1:45002,tls://***@h3:45003"
        );
    }

    #[tokio::test]
    async fn a_list_out_of_reach_is_named_whole_and_redacted() {
        // Two addresses where nothing listens: fail-fast names the whole
        // list, credentials redacted.
        let dead = |port| format!("nats://u:secret@127.0.0.1:{port}");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let url = format!("{},{}", dead(free()), dead(free()));
        let err = connect(ConnectOptions::new(url, "test").fail_fast())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("***@127.0.0.1") && err.contains(','), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn js_domains_are_carried_to_the_client_options() {
        let opts = ConnectOptions::new("nats://h:1", "t");
        assert_eq!(opts.js_domain, None);
        let opts = opts.with_js_domain(Some("hub".into()));
        assert_eq!(opts.js_domain.as_deref(), Some("hub"));
    }
}
