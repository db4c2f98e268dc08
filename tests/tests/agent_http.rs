//! The agent's HTTP surface under hostile clients, against a real agent
//! process and nats-server: slowloris connections do not stop it
//! answering, connections over the cap are closed at once, idle and slow
//! ones are timed out, every error answers the JSON envelope, and what it
//! keeps on disk is private.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use phasegate_tests::rollout::put_gate;
use phasegate_tests::{AgentProc, CoordEnv, NatsServer, PATIENCE, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slowloris connections held open at once.
const TRICKLERS: usize = 500;
/// Seconds each of them trickles (one byte a second).
const TRICKLE_SECS: u64 = 5;
/// Requests measured while they trickle.
const PROBES: usize = 50;

/// One answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// The status line and headers, lowercased.
    head: String,
    text: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }
}

/// Sends `request` on a new connection and reads until the agent closes
/// it (requests here say `connection: close`), for at most `within`.
async fn raw(addr: SocketAddr, request: &[u8], within: Duration) -> anyhow::Result<Raw> {
    tokio::time::timeout(within, async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        read_answer(&mut s).await
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {within:?}"))?
}

async fn read_answer(s: &mut TcpStream) -> anyhow::Result<Raw> {
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no complete answer: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line: {head:?}"))?;
    Ok(Raw {
        status,
        head: head.to_ascii_lowercase(),
        text: body.to_owned(),
    })
}

fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Waits until the agent closes `s` (EOF or reset), for at most `within`;
/// returns how long that took.
async fn closed_by_agent(s: &mut TcpStream, within: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("connection still open after {within:?}"))?;
    Ok(t0.elapsed())
}

/// An agent with `settings` (TOML keys of its config file).
async fn agent_with(
    nats: &NatsServer,
    settings: &str,
) -> anyhow::Result<(AgentProc, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, settings)?;
    let a = AgentProc::start(
        &nats.url(),
        "dev-1",
        "dev",
        &["--config", file.to_str().unwrap()],
    )
    .await?;
    Ok((a, dir))
}

/// A sample of the agent's `/metrics`, over a connection of its own (the
/// harness client keeps connections alive, and they would take slots).
async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let r = raw(addr, &request("GET", "/metrics", ""), PATIENCE).await?;
    r.text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} in:\n{}", r.text))
}

const OPEN: &str = "phasegate_agent_http_connections";
const REFUSED: &str = "phasegate_agent_http_connections_refused_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_stop_the_agent_answering() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    // Default limits: 1024 connections, 5 s to send a request head.
    let a = AgentProc::start(&nats.url(), "dev-1", "dev", &[]).await?;
    let addr = a.addr;
    // Open every slow connection first, so all of them are held while the
    // agent is measured.
    let mut socks = Vec::with_capacity(TRICKLERS);
    for _ in 0..TRICKLERS {
        socks.push(TcpStream::connect(addr).await?);
    }
    let head = b"POST /v1/check_gate HTTP/1.1\r\n";
    let tricklers: Vec<_> = socks
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                // Pacing the workload, not synchronising: a byte a second.
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                for i in 0..TRICKLE_SECS {
                    tick.tick().await;
                    let b = head[usize::try_from(i).unwrap() % head.len()];
                    if s.write_all(&[b]).await.is_err() {
                        break; // the agent closed it
                    }
                }
            })
        })
        .collect();
    wait_until(
        "the agent to hold every slow connection",
        PATIENCE,
        || async {
            metric(addr, OPEN)
                .await
                .is_ok_and(|n| n >= TRICKLERS as f64)
        },
    )
    .await?;
    let body = r#"{"gate": "checkout", "user": {"user_id": "u1"}}"#;
    let req = request("POST", "/v1/check_gate", body);
    let mut took = Vec::with_capacity(PROBES);
    let spacing = Duration::from_millis(TRICKLE_SECS * 1000 / PROBES as u64 * 8 / 10);
    let mut held_midway = 0.0;
    // The workload's pace: the probes spread over the trickle.
    let mut pace = tokio::time::interval(spacing);
    for i in 0..PROBES {
        pace.tick().await;
        if i == PROBES / 2 {
            // Half-way through, the slow connections are all still held
            // (the agent closes them 5 s after accepting them, since none
            // sends a whole request head).
            held_midway = metric(addr, OPEN).await?;
        }
        let t0 = Instant::now();
        let r = raw(addr, &req, Duration::from_secs(5)).await?;
        took.push(t0.elapsed());
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["reason"], json!("unknown"), "{r:?}");
    }
    for t in tricklers {
        t.await?;
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = took[PROBES / 2];
    let p99 = took[(PROBES * 99).div_ceil(100) - 1];
    let max = took[PROBES - 1];
    println!(
        "slowloris: {TRICKLERS} connections trickling; {PROBES} check_gate over fresh connections: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {held_midway} connections open on the agent half-way",
        ms(p50),
        ms(p99),
        ms(max)
    );
    assert!(
        held_midway >= TRICKLERS as f64,
        "the slow connections were held while measured ({held_midway} open)"
    );
    // Served beside the slow connections, never behind them: one queued
    // behind a trickler would wait for its next byte (a second) or its
    // timeout (5 s). The latency figures are printed above, not asserted
    // (a loaded machine stretches them).
    assert!(max < Duration::from_secs(1), "max {max:?}: {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_connections_are_closed_and_idle_ones_time_out() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (a, _dir) = agent_with(
        &nats,
        "max_connections = 8\nheader_read_timeout_ms = 2000\n",
    )
    .await?;
    let addr = a.addr;
    // Nine silent connections for eight slots (the harness may still hold
    // one more, kept alive from waiting for the agent to serve): the ones
    // over the cap are closed at once, the others when they have sent no
    // request head for 2 s.
    let mut socks = Vec::new();
    for _ in 0..9 {
        socks.push(TcpStream::connect(addr).await?);
    }
    let closed: Vec<_> = socks
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move { closed_by_agent(&mut s, Duration::from_secs(8)).await })
        })
        .collect();
    let mut after = Vec::new();
    for c in closed {
        after.push(c.await??);
    }
    after.sort();
    println!("9 silent connections for 8 slots closed after {after:?}");
    assert!(
        after[0] < Duration::from_secs(1),
        "one over the cap is closed at once: {after:?}"
    );
    assert!(
        after[8] >= Duration::from_millis(1500),
        "the ones with a slot are kept until the header timeout: {after:?}"
    );
    assert!(metric(addr, REFUSED).await? >= 1.0);
    // A keep-alive connection left idle after a request gives its slot back too.
    let mut ka = TcpStream::connect(addr).await?;
    ka.write_all(b"GET /healthz HTTP/1.1\r\nhost: agent\r\n\r\n")
        .await?;
    let mut first = [0u8; 12];
    ka.read_exact(&mut first).await?;
    assert_eq!(&first, b"HTTP/1.1 200");
    let idle_for = closed_by_agent(&mut ka, Duration::from_secs(8)).await?;
    println!("idle keep-alive connection closed after {idle_for:?}");
    // And the agent still answers.
    let r = raw(addr, &request("GET", "/healthz", ""), PATIENCE).await?;
    assert_eq!(r.status, 200, "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answers_the_json_envelope() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let (a, _dir) = agent_with(&nats, "body_read_timeout_ms = 500\n").await?;
    let addr = a.addr;
    let within = Duration::from_secs(5);
    // Too large by its length: answered before the body is sent (a body
    // left unread would turn the agent's close into a reset).
    let declared_big =
        b"POST /v1/check_gate HTTP/1.1\r\nhost: agent\r\ncontent-length: 71680\r\n\r\n".to_vec();
    // Too large as it streams: one chunk of 70 KiB announced, just over
    // the 64 KiB limit sent.
    let chunked_big = format!(
        "POST /v1/check_gate HTTP/1.1\r\nhost: agent\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}",
        70 * 1024,
        "x".repeat(64 * 1024 + 10)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "unknown path",
            request("GET", "/nothing", ""),
            404,
            "not_found",
        ),
        (
            "unknown path, POST",
            request("POST", "/v2/check_gate", "{}"),
            404,
            "not_found",
        ),
        (
            "wrong method",
            request("GET", "/v1/check_gate", ""),
            405,
            "invalid",
        ),
        (
            "wrong method on a GET route",
            request("DELETE", "/healthz", ""),
            405,
            "invalid",
        ),
        ("declared too large", declared_big, 413, "invalid"),
        (
            "chunked too large",
            chunked_big.into_bytes(),
            413,
            "invalid",
        ),
        (
            "malformed",
            request("POST", "/v1/get_config", "{"),
            400,
            "invalid",
        ),
    ];
    for (what, req, status, code) in cases {
        let r = raw(addr, &req, within).await?;
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert!(
            r.head.contains("content-type: application/json"),
            "{what}: {r:?}"
        );
        let v = r.json();
        assert_eq!(v["error"]["code"], json!(code), "{what}: {r:?}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {r:?}"
        );
        if status == 405 {
            assert!(r.head.contains("\r\nallow: "), "{what}: {r:?}");
        }
    }
    // A form content type (what `curl -d` sends) is read as JSON too.
    let form = String::from_utf8(request("POST", "/v1/check_gate", r#"{"gate": "g"}"#))?
        .replace("application/json", "application/x-www-form-urlencoded");
    let r = raw(addr, form.as_bytes(), within).await?;
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (200, json!("unknown")),
        "{r:?}"
    );
    // A body that does not arrive in time: 408, and the connection closed.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        b"POST /v1/check_gate HTTP/1.1\r\nhost: agent\r\ncontent-length: 100\r\n\r\n{\"gate\"",
    )
    .await?;
    let t0 = Instant::now();
    let r = tokio::time::timeout(within, read_answer(&mut s)).await??;
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.json()["error"]["code"], json!("invalid"), "{r:?}");
    println!("slow body answered 408 after {:?}", t0.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_directory_is_private() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let root = tempfile::tempdir()?;
    // Directories the agent creates itself, parents included.
    let dir = root.path().join("var/phasegate");
    let a = AgentProc::start_in(&env.nats.url(), "dev-1", "dev", &[], dir.clone(), &[]).await?;
    put_gate(
        &env.client,
        json!({"name": "g", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    wait_until("the gate to be served", PATIENCE, || async {
        a.check_gate("g", json!({}))
            .await
            .is_ok_and(|v| v["version"] == 1)
    })
    .await?;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root.path().join("var")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    // Everything inside, however deep: directories 0700, files 0600.
    let mut files = 0;
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                todo.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    assert!(files > 0, "the agent wrote its state");
    Ok(())
}
