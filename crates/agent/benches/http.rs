//! Throughput and latency of `POST /v1/check_gate` over HTTP on this
//! machine, and of the same evaluation over OpenFeature (OFREP single
//! flag, `POST /ofrep/v1/evaluate/flags/checkout`): an in-process agent
//! serving a gate with a few rules from its state file (no NATS needed),
//! and keep-alive clients hammering it, one endpoint after the other.
//!
//! `cargo bench -p phasegate-agent --bench http` prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use phasegate_agent::state::{DiskState, Store, StoredDesired};
use phasegate_agent::{Agent, AgentConfig};
use phasegate_proto::{DesiredEntity, EntityKind, EntitySpec, Segment};

const CLIENTS: usize = 32;
const RUN: Duration = Duration::from_secs(3);

fn gate() -> EntitySpec {
    serde_json::from_value(serde_json::json!({
        "kind": "gate", "name": "checkout", "version": 3,
        "rules": [
            {"id": "staff", "pass_percentage": 100, "conditions": [{"field": "email", "op": "str_matches", "values": ["@corp\\.io$"]}]},
            {"id": "beta", "pass_percentage": 50, "conditions": [{"field": "country", "op": "any", "values": ["DE", "FR", "NL"]}, {"field": "app_version", "op": "version_gte", "values": ["2.10"]}]},
            {"id": "prod", "pass_percentage": 10, "conditions": [{"field": "segment", "op": "any", "values": ["dev"]}]}
        ]
    }))
    .unwrap()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let segment = Segment::new("dev").unwrap();
    let mut state = DiskState {
        segment: Some(segment.clone()),
        ..DiskState::default()
    };
    let spec = gate();
    state.entities.insert(
        "gate.checkout".into(),
        StoredDesired {
            revision: 1,
            desired: DesiredEntity {
                kind: EntityKind::Gate,
                name: spec.name.clone(),
                base: Some(spec),
                rollout: None,
            },
        },
    );
    Store::open(dir.path()).0.replace(&state).unwrap();
    let mut cfg = AgentConfig::new(segment, "nats://127.0.0.1:1");
    cfg.state_dir = dir.path().to_path_buf();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let agent = Agent::start(cfg).await.unwrap();
    let addr = agent.local_addr();

    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let check_gate = measure(
        &client,
        "check_gate over HTTP",
        format!("http://{addr}/v1/check_gate"),
        Bytes::from_static(br#"{"gate": "checkout", "user": {"user_id": "u-42", "email": "x@example.com", "country": "DE", "app_version": "2.11.0"}}"#),
    )
    .await;
    let ofrep = measure(
        &client,
        "OFREP single flag over HTTP",
        format!("http://{addr}/ofrep/v1/evaluate/flags/checkout"),
        Bytes::from_static(br#"{"context": {"targetingKey": "u-42", "email": "x@example.com", "country": "DE", "app_version": "2.11.0"}}"#),
    )
    .await;
    println!(
        "OFREP single flag / check_gate throughput: {:.2}",
        ofrep / check_gate
    );
    agent.stop().await;
}

/// Hammers `url` with `body` from keep-alive clients for [`RUN`]; prints
/// the figures and returns the requests per second.
async fn measure(
    client: &Client<HttpConnector, Full<Bytes>>,
    name: &str,
    url: String,
    body: Bytes,
) -> f64 {
    // Warm up, and check the answer once.
    let req = hyper::Request::post(&url)
        .body(Full::new(body.clone()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    println!("{name}: answer {}", String::from_utf8_lossy(&answer));

    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = client.clone();
        let body = body.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while start.elapsed() < RUN {
                let t = Instant::now();
                let req = hyper::Request::post(&url)
                    .body(Full::new(body.clone()))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                assert!(resp.status().is_success());
                let _ = resp.into_body().collect().await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize];
    let rate = all.len() as f64 / secs;
    println!(
        "{name}: {} requests in {secs:.2}s with {CLIENTS} keep-alive clients = {rate:.0} req/s; latency p50 {:?}, p99 {:?}; {:.1} µs of CPU per request (clients included)",
        all.len(),
        pct(0.5),
        pct(0.99),
        cpu * 1e6 / all.len() as f64
    );
    rate
}

/// CPU time this process has used (user + system), in seconds: a figure
/// that other load on the machine disturbs far less than throughput.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and
    // stime are the 12th and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}
