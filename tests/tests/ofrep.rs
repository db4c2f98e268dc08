//! OpenFeature (OFREP, SPEC.md §5) against a real agent process, a real
//! coordinator and a real nats-server:
//!
//! - the HTTP contract: every error case (malformed JSON, a context that
//!   is not an object, an unknown key, an ambiguous key), the bulk answer's
//!   weak `ETag` and 304, CORS preflight and exposed headers;
//! - push: an event on apply with the applied revision as its id, resume
//!   with `Last-Event-ID`, keep-alives, the cap, and a stalled client that
//!   blocks neither applying nor the other clients;
//! - conformance with **real OpenFeature SDKs and their stock OFREP
//!   providers**, Python and JavaScript, installed by
//!   `scripts/install-ofrep-sdks.sh` (`make tools`) into `.tools/`:
//!   boolean and object evaluations, reasons, variants, metadata,
//!   flag-not-found, a rollout phase at 50 % splitting users exactly as
//!   `/v1/check_gate` does, and a change reaching the SDK. Without the SDKs
//!   the test fails and says how to install them: it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use phasegate_proto::PhaseState;
use phasegate_tests::rollout::{put_gate, put_pipeline, wait_trigger};
use phasegate_tests::{AgentProc, CoordEnv, PATIENCE, wait_for, workspace_root};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer with its headers.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<Answer> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_owned())))?)
        .await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn put_config(c: &phasegate_client::PhasegateClient, v: Value) -> anyhow::Result<()> {
    c.entity_put(
        phasegate_proto::EntityKind::Config,
        serde_json::from_value(v)?,
        phasegate_tests::rollout::actor("carol"),
        None,
        None,
    )
    .await?;
    Ok(())
}

/// Waits until the agent serves `gate` at `version` for an anonymous user.
async fn wait_gate_version(a: &AgentProc, gate: &str, version: u64) -> anyhow::Result<()> {
    wait_for(
        &format!("the agent serving {gate} v{version}"),
        PATIENCE,
        || async {
            let v = a
                .check_gate(gate, json!({}))
                .await
                .map_err(|e| e.to_string())?;
            if v["version"] == version {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    )
    .await?;
    Ok(())
}

/// The entities every test here starts from: a gate with a rule at 100 %
/// and one at 50 %, a config, and a name that is both.
async fn seed(env: &CoordEnv, a: &AgentProc) -> anyhow::Result<()> {
    let c = &env.client;
    put_gate(
        c,
        json!({"name": "checkout", "rules": [
            {"id": "staff", "pass_percentage": 100, "conditions": [{"field": "email", "op": "str_contains_any", "values": ["@corp.io"]}]},
            {"id": "beta", "pass_percentage": 50, "conditions": [{"field": "custom.plan", "op": "any", "values": ["beta"]}]}
        ]}),
    )
    .await?;
    put_config(
        c,
        json!({"name": "limits", "default_value": {"max_items": 10},
               "rules": [{"id": "eu", "pass_percentage": 100, "value": {"max_items": 25},
                          "conditions": [{"field": "country", "op": "any", "values": ["FR", "DE"]}]}]}),
    )
    .await?;
    put_gate(c, json!({"name": "dual"})).await?;
    put_config(c, json!({"name": "dual"})).await?;
    wait_for(
        "the agent serving the four seeded entities",
        PATIENCE,
        || async {
            let (_, v) = a
                .http
                .get(a.addr, "/v1/entities")
                .await
                .map_err(|e| e.to_string())?;
            if v.as_array().is_some_and(|l| l.len() == 4) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    )
    .await?;
    Ok(())
}

const FLAGS: &str = "/ofrep/v1/evaluate/flags";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_contract_errors_etag_and_cors() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let a = AgentProc::start(&env.nats.url(), "dev-1", "dev", &[]).await?;
    seed(&env, &a).await?;
    let addr = a.addr;
    let post = |path: String, body: &'static str| async move {
        send(addr, "POST", &path, &[], body).await.unwrap()
    };

    // One flag: the value, reason, variant and metadata of §5.
    let r = post(
        format!("{FLAGS}/gate:checkout"),
        r#"{"context": {"targetingKey": "u-1", "email": "ann@corp.io"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.json(),
        json!({"key": "gate:checkout", "value": true, "reason": "TARGETING_MATCH", "variant": "on",
               "metadata": {"version": 1, "flagSetId": "dev", "rule": "staff", "stale": false}})
    );
    let r = post(
        format!("{FLAGS}/limits"),
        r#"{"context": {"country": "FR"}}"#,
    )
    .await;
    assert_eq!(r.json()["value"], json!({"max_items": 25}));
    assert_eq!(r.json()["variant"], "v1");

    // Every error case, with its status, code and details.
    for (path, body, status, code) in [
        (format!("{FLAGS}/checkout"), "{not json", 400, "PARSE_ERROR"),
        (format!("{FLAGS}/checkout"), "[1, 2]", 400, "PARSE_ERROR"),
        (
            format!("{FLAGS}/checkout"),
            r#"{"context": ["u-1"]}"#,
            400,
            "INVALID_CONTEXT",
        ),
        (
            format!("{FLAGS}/checkout"),
            r#"{"context": "u-1"}"#,
            400,
            "INVALID_CONTEXT",
        ),
        (format!("{FLAGS}/nope"), "{}", 404, "FLAG_NOT_FOUND"),
        (
            format!("{FLAGS}/config:checkout"),
            "{}",
            404,
            "FLAG_NOT_FOUND",
        ),
        (format!("{FLAGS}/dual"), "{}", 400, "GENERAL"),
    ] {
        let key = path.rsplit('/').next().unwrap().to_owned();
        let r = post(path, body).await;
        assert_eq!(r.status, status, "{key} {body}: {r:?}");
        let v = r.json();
        assert_eq!(v["errorCode"], code, "{key} {body}: {v}");
        assert_eq!(v["key"], key.as_str(), "{v}");
        assert!(
            v["errorDetails"].as_str().is_some_and(|d| !d.is_empty()),
            "{v}"
        );
    }
    // Both kinds of `dual` are reachable by their prefixed keys.
    assert_eq!(post(format!("{FLAGS}/gate:dual"), "{}").await.status, 200);
    assert_eq!(post(format!("{FLAGS}/config:dual"), "{}").await.status, 200);

    // Bulk: every entity, bare names except where a name is both kinds.
    let r = post(FLAGS.to_owned(), r#"{"context": {"targetingKey": "u-1"}}"#).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    let keys: Vec<&str> = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["checkout", "config:dual", "gate:dual", "limits"]);
    assert_eq!(v["eventStreams"][0]["type"], "sse");
    assert_eq!(
        v["eventStreams"][0]["url"],
        format!("http://{addr}/ofrep/v1/events")
    );
    let tag = r.header("etag").unwrap().to_owned();
    assert!(tag.starts_with("W/\""), "{tag}");
    assert_eq!(r.header("access-control-expose-headers"), Some("ETag"));
    // The same answer: 304, with the tag again.
    let body = r#"{"context": {"targetingKey": "u-1"}}"#;
    let r = send(addr, "POST", FLAGS, &[("if-none-match", &tag)], body).await?;
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(tag.as_str()));
    // Another context with other answers: another tag, a full answer.
    let r = send(
        addr,
        "POST",
        FLAGS,
        &[("if-none-match", &tag)],
        r#"{"context": {"country": "DE"}}"#,
    )
    .await?;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag"), Some(tag.as_str()));
    // A change to any entity changes the tag of the same context.
    put_gate(&env.client, json!({"name": "dual", "enabled": false})).await?;
    wait_for(
        "a new ETag once the change is applied",
        PATIENCE,
        || async {
            let r = send(addr, "POST", FLAGS, &[("if-none-match", &tag)], body)
                .await
                .map_err(|e| e.to_string())?;
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await?;
    // Bulk errors carry no key.
    let r = post(FLAGS.to_owned(), r#"{"context": 7}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "INVALID_CONTEXT", "{}", r.body);
    assert!(r.json().get("key").is_none());

    // `phasegate eval` asks the same endpoint, for operators.
    let agent = format!("http://{addr}");
    let eval = |args: &[&str]| {
        let out = std::process::Command::new(phasegate_tests::phasegate_binary().unwrap())
            .arg("eval")
            .args(["--agent", &agent])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = eval(&[
        "checkout",
        "--targeting-key",
        "u-1",
        "--context",
        r#"{"email": "ann@corp.io"}"#,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("FLAG "), "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "checkout",
            "true",
            "on",
            "TARGETING_MATCH",
            "1",
            "staff",
            "-",
            "-",
            "dev",
            "false"
        ]
    );
    let (code, out, err) = eval(&[
        "config:limits",
        "--json",
        "--context",
        r#"{"country": "FR"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out)?;
    assert_eq!(v["value"], json!({"max_items": 25}));
    assert_eq!(v["metadata"]["flagSetId"], "dev");
    let (code, _, err) = eval(&["nope"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("FLAG_NOT_FOUND"), "{err}");
    let (code, _, err) = eval(&["dual"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = eval(&["checkout", "--context", "[1]"]);
    assert_eq!(code, Some(1), "{err}");

    // Evaluations are counted per flag by the OpenTelemetry conventions'
    // attributes, whichever API asked and however the key was spelt.
    let series = "phasegate_agent_flag_evaluations_total{feature_flag_key=\"gate:checkout\",feature_flag_version=\"1\",feature_flag_result_variant=\"on\",feature_flag_result_reason=\"TARGETING_MATCH\",feature_flag_provider_name=\"phasegate\",feature_flag_set_id=\"dev\"} ";
    let count = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = count(&send(addr, "GET", "/metrics", &[], "").await?.body);
    post(
        format!("{FLAGS}/checkout"),
        r#"{"context": {"email": "bo@corp.io"}}"#,
    )
    .await;
    a.check_gate("checkout", json!({"email": "cy@corp.io"}))
        .await?;
    let text = send(addr, "GET", "/metrics", &[], "").await?.body;
    assert_eq!(count(&text), before + 2.0, "{text}");
    assert!(text.contains("phasegate_build_info{version=\""), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("phasegate_agent_last_sync_timestamp_seconds{")
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|t| t > 1.7e9)
        ),
        "{text}"
    );

    // CORS: a preflight is answered for every OFREP endpoint.
    for path in [
        FLAGS.to_owned(),
        format!("{FLAGS}/checkout"),
        "/ofrep/v1/events".to_owned(),
    ] {
        let r = send(
            addr,
            "OPTIONS",
            &path,
            &[
                ("origin", "http://app.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,if-none-match",
                ),
            ],
            "",
        )
        .await?;
        assert_eq!(r.status, 204, "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert!(
            r.header("access-control-allow-methods")
                .is_some_and(|m| m.contains("POST")),
            "{r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("content-type,if-none-match")
        );
    }
    Ok(())
}

/// An event stream read off a raw connection.
struct Sse {
    sock: TcpStream,
    seen: String,
}

impl Sse {
    async fn open(addr: SocketAddr, last_event_id: Option<&str>) -> anyhow::Result<Self> {
        let mut sock = TcpStream::connect(addr).await?;
        let resume = last_event_id
            .map(|id| format!("last-event-id: {id}\r\n"))
            .unwrap_or_default();
        sock.write_all(
            format!("GET /ofrep/v1/events HTTP/1.1\r\nhost: agent\r\naccept: text/event-stream\r\n{resume}\r\n")
                .as_bytes(),
        )
        .await?;
        Ok(Self {
            sock,
            seen: String::new(),
        })
    }

    /// Reads until `what` has been seen after `from` (a byte offset of
    /// everything read), for at most `within`; returns the offset after it.
    async fn until(&mut self, from: usize, what: &str, within: Duration) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.seen.get(from..).and_then(|s| s.find(what)) {
                return Ok(from + i + what.len());
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.sock.read(&mut buf))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("{what:?} not seen within {within:?}; got {:?}", self.seen)
                })??;
            anyhow::ensure!(n > 0, "stream closed; got {:?}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

/// The applied revision the agent reports in `/metrics`.
async fn applied_revision(a: &AgentProc) -> anyhow::Result<u64> {
    let r = send(a.addr, "GET", "/metrics", &[], "").await?;
    r.body
        .lines()
        .find(|l| l.starts_with("phasegate_agent_applied_revision{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| anyhow::anyhow!("no applied revision in {}", r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_push_resume_and_ignore_stalled_clients() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "max_event_streams = 3\nevent_stream_keep_alive_ms = 200\n",
    )?;
    let a = AgentProc::start(
        &env.nats.url(),
        "dev-1",
        "dev",
        &["--config", file.to_str().unwrap()],
    )
    .await?;
    put_gate(&env.client, json!({"name": "g"})).await?;
    wait_gate_version(&a, "g", 1).await?;

    // A client that opens a stream and never reads from it.
    let mut stalled = TcpStream::connect(a.addr).await?;
    stalled
        .write_all(b"GET /ofrep/v1/events HTTP/1.1\r\nhost: agent\r\n\r\n")
        .await?;
    let mut live = Sse::open(a.addr, None).await?;
    let at = live.until(0, "text/event-stream", PATIENCE).await?;
    let at = live.until(at, "retry: ", PATIENCE).await?;
    // Keep-alives flow while nothing changes.
    let at = live.until(at, ": keep-alive", PATIENCE).await?;

    // A change: applied (the stalled client notwithstanding) and pushed.
    put_gate(
        &env.client,
        json!({"name": "g", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    wait_gate_version(&a, "g", 2).await?;
    let revision = applied_revision(&a).await?;
    let event = format!("id: {revision}\ndata: {{\"type\":\"refetchEvaluation\"}}\n\n");
    live.until(at, &event, PATIENCE).await?;

    // A client that missed it gets it at once on reconnecting.
    let mut behind = Sse::open(a.addr, Some("1")).await?;
    behind.until(0, &event, PATIENCE).await?;
    // At the cap (3 open), one more is refused, with the JSON envelope.
    let r = send(a.addr, "GET", "/ofrep/v1/events", &[], "").await?;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "unavailable");
    assert!(r.header("retry-after").is_some());
    // One in step gets nothing but keep-alives until the next change.
    drop(behind);
    let mut current = wait_for(
        "a stream slot to free after a client left",
        PATIENCE,
        || async {
            let rev = revision.to_string();
            let mut s = Sse::open(a.addr, Some(&rev))
                .await
                .map_err(|e| e.to_string())?;
            // A slot frees once the agent sees the dropped stream's socket close.
            match s.until(0, " 200 ", Duration::from_secs(1)).await {
                Ok(_) => Ok(s),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let at = current.until(0, ": keep-alive", PATIENCE).await?;
    assert!(
        !current.seen.contains("refetchEvaluation"),
        "{}",
        current.seen
    );
    // The next change reaches both readers.
    put_gate(&env.client, json!({"name": "g"})).await?;
    wait_gate_version(&a, "g", 3).await?;
    let next = applied_revision(&a).await?;
    assert!(next > revision);
    let event = format!("id: {next}\ndata: {{\"type\":\"refetchEvaluation\"}}\n\n");
    current.until(at, &event, PATIENCE).await?;
    live.until(0, &event, PATIENCE).await?;
    drop(stalled);
    Ok(())
}

/// Where an SDK lives, and how to run its driver script.
struct Sdk {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
    envs: Vec<(&'static str, PathBuf)>,
}

fn sdks() -> anyhow::Result<Vec<Sdk>> {
    let root = workspace_root();
    let tools = root.join(".tools");
    let py = tools.join("py-ofrep/bin/python");
    let js = tools.join("js-ofrep/node_modules");
    let missing: Vec<String> = [(&py, "Python"), (&js, "JavaScript")]
        .iter()
        .filter(|(p, _)| !p.exists())
        .map(|(p, n)| format!("{n} ({})", p.display()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the OpenFeature SDKs for the OFREP conformance test are not installed: {}; \
         run `make tools` (scripts/install-ofrep-sdks.sh), which needs PyPI and npm",
        missing.join(", ")
    );
    Ok(vec![
        Sdk {
            name: "python",
            program: py,
            script: root.join("tests/ofrep/eval.py"),
            envs: vec![],
        },
        Sdk {
            name: "javascript",
            program: PathBuf::from("node"),
            script: root.join("tests/ofrep/eval.cjs"),
            envs: vec![("NODE_PATH", js)],
        },
    ])
}

impl Sdk {
    /// Runs the driver over `evaluations`; one result per evaluation.
    async fn eval(&self, addr: SocketAddr, evaluations: &Value) -> anyhow::Result<Vec<Value>> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} for the {} SDK ({e}); `make tools` installs the SDKs, node and python3 must be on the machine",
                self.program.display(),
                self.name
            )
        })?;
        let input = json!({"base_url": format!("http://{addr}"), "evaluations": evaluations});
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.to_string().as_bytes()).await?;
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| anyhow::anyhow!("the {} SDK driver did not finish", self.name))??;
        anyhow::ensure!(
            out.status.success(),
            "the {} SDK driver failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_openfeature_sdks_evaluate_through_the_stock_providers() -> anyhow::Result<()> {
    // First, so a machine without the SDKs fails at once and says why.
    let sdks = sdks()?;
    let env = CoordEnv::start().await?;
    let a = AgentProc::start(&env.nats.url(), "dev-1", "dev", &[]).await?;
    env.wait_live_agents(1).await?;
    seed(&env, &a).await?;
    // A rollout that holds its first phase at 50 % of dev's units.
    let c = &env.client;
    put_pipeline(
        c,
        json!({"name": "half", "phases": [
            {"id": "dev-half", "segments": ["dev"], "pass_percentage": 50, "wait_ms": 3_600_000},
            {"id": "rest", "segments": ["prod"], "wait_ms": 0}
        ]}),
    )
    .await?;
    put_gate(c, json!({"name": "rollout"})).await?;
    wait_gate_version(&a, "rollout", 1).await?;
    let t = put_gate(
        c,
        json!({"name": "rollout", "pipeline": "half", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?
    .trigger
    .expect("a trigger");
    wait_trigger(c, &t.id, "dev-half baking", |t| {
        t.is_at("dev-half", PhaseState::Baking)
    })
    .await?;

    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    // What the agent's own API answers for each of them.
    let mut expected = Vec::new();
    for u in &users {
        expected.push(a.check_gate("rollout", json!({"user_id": u})).await?);
    }
    let on = expected.iter().filter(|v| v["value"] == true).count();
    assert!(
        on > 0 && on < users.len(),
        "a 50 % phase should split 60 users, got {on} on"
    );

    let mut evaluations = vec![
        json!({"type": "boolean", "key": "checkout", "default": false,
               "context": {"targetingKey": "u-1", "email": "ann@corp.io"}}),
        json!({"type": "boolean", "key": "gate:checkout", "default": true,
               "context": {"targetingKey": "u-1"}}),
        json!({"type": "object", "key": "limits", "default": {},
               "context": {"targetingKey": "u-2", "country": "DE"}}),
        json!({"type": "boolean", "key": "no-such-flag", "default": true,
               "context": {"targetingKey": "u-1"}}),
        json!({"type": "boolean", "key": "dual", "default": true, "context": {}}),
    ];
    for u in &users {
        evaluations.push(
            json!({"type": "boolean", "key": "rollout", "default": false,
                                "context": {"targetingKey": u}}),
        );
    }
    let evaluations = Value::Array(evaluations);

    for sdk in &sdks {
        let name = sdk.name;
        let got = sdk.eval(a.addr, &evaluations).await?;
        assert_eq!(got.len(), 5 + users.len(), "{name}: {got:?}");
        // A boolean at a rule of 100 %.
        assert_eq!(got[0]["value"], true, "{name}: {}", got[0]);
        assert_eq!(got[0]["reason"], "TARGETING_MATCH", "{name}: {}", got[0]);
        assert_eq!(got[0]["variant"], "on", "{name}: {}", got[0]);
        assert_eq!(
            got[0]["metadata"],
            json!({"version": 1, "flagSetId": "dev", "rule": "staff", "stale": false}),
            "{name}"
        );
        assert_eq!(got[0]["error_code"], Value::Null, "{name}: {}", got[0]);
        // No rule held: the default.
        assert_eq!(got[1]["value"], false, "{name}: {}", got[1]);
        assert_eq!(got[1]["reason"], "DEFAULT", "{name}: {}", got[1]);
        assert_eq!(got[1]["variant"], "off", "{name}: {}", got[1]);
        // An object.
        assert_eq!(
            got[2]["value"],
            json!({"max_items": 25}),
            "{name}: {}",
            got[2]
        );
        assert_eq!(got[2]["variant"], "v1", "{name}: {}", got[2]);
        assert_eq!(got[2]["reason"], "TARGETING_MATCH", "{name}: {}", got[2]);
        // Not found: the caller's default, with the code.
        assert_eq!(got[3]["value"], true, "{name}: {}", got[3]);
        assert_eq!(got[3]["error_code"], "FLAG_NOT_FOUND", "{name}: {}", got[3]);
        assert_eq!(got[3]["reason"], "ERROR", "{name}: {}", got[3]);
        // Ambiguous: a general error, the default.
        assert_eq!(got[4]["value"], true, "{name}: {}", got[4]);
        assert_eq!(got[4]["error_code"], "GENERAL", "{name}: {}", got[4]);
        // The 50 % phase: every user as /v1/check_gate has it.
        for (i, (u, want)) in users.iter().zip(&expected).enumerate() {
            let g = &got[5 + i];
            assert_eq!(g["value"], want["value"], "{name}: {u}: {g} vs {want}");
            assert_eq!(
                g["metadata"]["version"], want["version"],
                "{name}: {u}: {g}"
            );
            if want["trigger_id"].is_null() {
                assert_eq!(g["reason"], "DEFAULT", "{name}: {u}: {g}");
                assert!(g["metadata"].get("triggerId").is_none(), "{name}: {g}");
            } else {
                assert_eq!(g["reason"], "SPLIT", "{name}: {u}: {g}");
                assert_eq!(
                    g["metadata"]["triggerId"], want["trigger_id"],
                    "{name}: {g}"
                );
                assert_eq!(g["metadata"]["phaseId"], "dev-half", "{name}: {g}");
            }
        }
    }

    // A change applied by the agent reaches the SDKs.
    put_gate(
        c,
        json!({"name": "checkout", "enabled": false, "rules": [
            {"id": "staff", "pass_percentage": 100, "conditions": [{"field": "email", "op": "str_contains_any", "values": ["@corp.io"]}]},
            {"id": "beta", "pass_percentage": 50, "conditions": [{"field": "custom.plan", "op": "any", "values": ["beta"]}]}
        ]}),
    )
    .await?;
    let one = json!([{"type": "boolean", "key": "checkout", "default": true,
                      "context": {"targetingKey": "u-1", "email": "ann@corp.io"}}]);
    for sdk in &sdks {
        wait_for(
            &format!("the {} SDK seeing checkout disabled", sdk.name),
            PATIENCE,
            || async {
                let got = sdk.eval(a.addr, &one).await.map_err(|e| e.to_string())?;
                if got[0]["reason"] == "DISABLED" && got[0]["value"] == false {
                    Ok(())
                } else {
                    Err(got[0].to_string())
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_evaluation_is_a_span_with_the_feature_flag_attributes() -> anyhow::Result<()> {
    let otlp = phasegate_tests::otlp::OtlpReceiver::start().await?;
    let endpoint = otlp.endpoint();
    let envs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let env = CoordEnv::start().await?;
    let a = AgentProc::start_env(&env.nats.url(), "dev-1", "dev", &[], &envs).await?;
    put_gate(
        &env.client,
        json!({"name": "g", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    wait_gate_version(&a, "g", 1).await?;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = send(
        a.addr,
        "POST",
        &format!("{FLAGS}/g"),
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
        r#"{"context": {"targetingKey": "u-1"}}"#,
    )
    .await?;
    assert_eq!(r.status, 200, "{r:?}");
    let span = wait_for("the evaluation's span", PATIENCE, || async {
        otlp.spans()
            .into_iter()
            .find(|s| s.name == "feature_flag.evaluation")
            .ok_or("no span yet")
    })
    .await?;
    assert_eq!(span.trace_id, trace);
    assert_eq!(span.parent_span_id, "00f067aa0ba902b7");
    for (k, v) in [
        ("feature_flag.key", "g"),
        ("feature_flag.result.variant", "on"),
        ("feature_flag.result.reason", "TARGETING_MATCH"),
        ("feature_flag.provider.name", "phasegate"),
        ("feature_flag.set.id", "dev"),
        ("feature_flag.version", "1"),
    ] {
        assert_eq!(
            span.attrs.get(k).map(String::as_str),
            Some(v),
            "{k}: {span:?}"
        );
    }
    Ok(())
}
