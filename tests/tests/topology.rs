//! The production topology on loopback: a 3-node JetStream cluster with
//! replicated buckets, and a hub with a leaf node per region. Real
//! `nats-server` and `phasegate` processes; servers killed with `kill -9`,
//! links cut at the TCP level.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use phasegate_bus::{BucketOptions, ConnectOptions};
use phasegate_client::PhasegateClient;
use phasegate_devkit::{ClusterOptions, NatsCluster, TcpLink, start_leaf};
use phasegate_proto::*;
use phasegate_tests::http::Http;
use phasegate_tests::rollout::wait_trigger;
use phasegate_tests::{
    AgentProc, ChildProcess, PATIENCE, spawn_phasegate, spawn_phasegate_env, wait_for,
    wait_live_agents,
};
use serde_json::json;

/// Prints the end of each process's log when dropped, if
/// `PHASEGATE_TOPOLOGY_LOGS` is set: to see what happened in a test that
/// failed by returning an error (the kit prints logs on panics only).
struct LogsOnFailure<'a>(Vec<&'a ChildProcess>);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::env::var_os("PHASEGATE_TOPOLOGY_LOGS").is_some() {
            for p in &self.0 {
                eprintln!("---- {}\n{}", p.log_path().display(), p.log_tail(60));
            }
        }
    }
}

/// Every bucket the coordinator keeps.
/// One cluster at a time: three servers electing stream leaders, with a
/// coordinator and agents, are as much as two shared cores take while
/// leader elections stay within the tests' patience.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BUCKETS: [Bucket; 6] = [
    Bucket::Pipelines,
    Bucket::Entities,
    Bucket::Triggers,
    Bucket::Desired,
    Bucket::Agents,
    Bucket::Leader,
];

/// Waits until JetStream of the servers at `urls` answers (a cluster
/// elects its meta leader after the servers listen): a bucket with
/// `replicas` copies can be created.
async fn wait_jetstream(urls: &str, replicas: usize) -> anyhow::Result<()> {
    let client = phasegate_bus::connect(ConnectOptions::new(urls, "probe")).await?;
    wait_for("JetStream to answer", PATIENCE, || async {
        client
            .kv(
                "probe",
                BucketOptions {
                    replicas,
                    ..BucketOptions::default()
                },
            )
            .await
            .map(|_| ())
    })
    .await?;
    Ok(())
}

/// A coordinator with `toml` as its configuration file.
fn coordinator(dir: &std::path::Path, toml: &str) -> anyhow::Result<ChildProcess> {
    let conf = dir.join("coordinator.toml");
    std::fs::write(&conf, toml)?;
    spawn_phasegate(
        "coordinator",
        &["coordinator", "--config", &conf.display().to_string()],
    )
}

/// Stores pipeline `phases` (ids = segments, with their bake times) and
/// puts gate `g` on it; returns the trigger.
async fn roll_out(c: &PhasegateClient, phases: &[(&str, u64)]) -> anyhow::Result<TriggerId> {
    let actor = Actor::new("op")?;
    let phases: Vec<_> = phases
        .iter()
        .map(|(s, wait)| json!({"id": s, "segments": [s], "wait_ms": wait}))
        .collect();
    c.pipeline_put(
        serde_json::from_value(json!({"name": "p", "phases": phases}))?,
        actor.clone(),
    )
    .await?;
    put_gate(c, 1).await
}

/// Puts gate `g` on pipeline `p`, its rule named after `n` so that each
/// `n` is a new version.
async fn put_gate(c: &PhasegateClient, n: u64) -> anyhow::Result<TriggerId> {
    let r = c
        .entity_put(
            EntityKind::Gate,
            serde_json::from_value(json!({"name": "g", "pipeline": "p",
                "rules": [{"id": format!("r{n}"), "pass_percentage": 100}]}))?,
            Actor::new("op")?,
            None,
            None,
        )
        .await?;
    Ok(r.trigger.expect("a trigger").id)
}

/// Waits until the agent serves gate `g` at `version` with `stale` as
/// given.
async fn wait_serving(a: &AgentProc, version: u64, stale: bool) -> anyhow::Result<()> {
    wait_for(
        &format!("{} serving g v{version}, stale {stale}", a.addr),
        PATIENCE,
        || async {
            let v = a
                .check_gate("g", json!({"user_id": "u"}))
                .await
                .map_err(|e| e.to_string())?;
            if v["version"] == json!(version) && v["stale"] == json!(stale) {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    )
    .await?;
    Ok(())
}

/// The index of the cluster server the connection named `name` uses, from
/// each server's `/connz`.
async fn server_of(cluster: &NatsCluster, name: &str) -> anyhow::Result<usize> {
    let http = Http::default();
    Ok(
        wait_for(&format!("{name} on a server"), PATIENCE, || async {
            for i in 0..cluster.nodes().len() {
                let Some(port) = cluster.monitor_port(i) else {
                    continue;
                };
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                let Ok((_, connz)) = http.get(addr, "/connz?limit=1024").await else {
                    continue;
                };
                let found = connz["connections"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["name"] == json!(name)));
                if found {
                    return Ok(i);
                }
            }
            Err("not connected to any server")
        })
        .await?,
    )
}

/// How long a rollout may take to finish after a server of the cluster
/// died: its streams elect new leaders first (NATS's Raft waits 4 to 9 s
/// before an election), then the coordinator and agents go on.
const AFTER_A_KILL: Duration = Duration::from_secs(25);

/// A 3-node cluster with R3 buckets, a coordinator (the server list from
/// `$PHASEGATE_NATS_URL`) and agents `dev` and `prod` (the list from
/// `--nats-url`), each known to the coordinator.
struct ClusterFleet {
    cluster: NatsCluster,
    c: PhasegateClient,
    probe: phasegate_bus::Client,
    dev: AgentProc,
    prod: AgentProc,
    coord: ChildProcess,
    _dir: tempfile::TempDir,
}

impl ClusterFleet {
    async fn start() -> anyhow::Result<Self> {
        let cluster = NatsCluster::start(3).await?;
        let urls = cluster.urls();
        wait_jetstream(&urls, 3).await?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("coordinator.toml");
        std::fs::write(&conf, "bucket_replicas = 3\nmetrics_listen = \"off\"\n")?;
        let coord = spawn_phasegate_env(
            "coordinator",
            &["coordinator", "--config", &conf.display().to_string()],
            &[("PHASEGATE_NATS_URL", urls.as_str())],
        )?;
        let dev = AgentProc::start(&urls, "dev-1", "dev", &[]).await?;
        let prod = AgentProc::start(&urls, "prod-1", "prod", &[]).await?;
        let c = PhasegateClient::connect(&urls, "phasegate", Duration::from_secs(5)).await?;
        wait_live_agents(&c, 2).await?;
        let probe = phasegate_bus::connect(ConnectOptions::new(&urls, "probe")).await?;
        Ok(Self {
            cluster,
            c,
            probe,
            dev,
            prod,
            coord,
            _dir: dir,
        })
    }

    /// Starts a rollout (dev bakes for 2 s, then prod) and waits until dev
    /// bakes.
    async fn mid_rollout(&self) -> anyhow::Result<TriggerId> {
        let id = roll_out(&self.c, &[("dev", 2000), ("prod", 200)]).await?;
        wait_trigger(&self.c, &id, "dev baking", |t| {
            t.phase_state == Some(PhaseState::Baking)
        })
        .await?;
        Ok(id)
    }

    /// Waits until trigger `id` completes and both agents serve v1.
    async fn completes(&self, id: &TriggerId) -> anyhow::Result<()> {
        wait_for("the rollout to complete", AFTER_A_KILL, || async {
            let t = self
                .c
                .trigger_get(id.clone())
                .await
                .map_err(|e| e.to_string())?;
            match t.status {
                TriggerStatus::Completed => Ok(()),
                TriggerStatus::Aborted => Err("aborted".to_owned()),
                other => Err(format!("{other:?} {:?}", t.phase_state)),
            }
        })
        .await?;
        wait_serving(&self.dev, 1, false).await?;
        wait_serving(&self.prod, 1, false).await?;
        // Nothing lost: the trigger is on record, the gate at version 1.
        let triggers = self.c.trigger_list(TriggerListRequest::default()).await?;
        assert_eq!(triggers.len(), 1, "{triggers:?}");
        Ok(())
    }
}

impl Drop for ClusterFleet {
    fn drop(&mut self) {
        drop(LogsOnFailure(vec![
            &self.coord,
            &self.dev.proc,
            &self.prod.proc,
        ]));
    }
}

/// The server list in the coordinator's environment and the agents'
/// flags: `kill -9` of the server the coordinator is connected to, in the
/// middle of a rollout, loses nothing; the coordinator reconnects to
/// another by itself and the rollout completes. Every bucket has 3
/// replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_the_coordinators_server_mid_rollout_and_the_rollout_completes()
-> anyhow::Result<()> {
    let _one = ONE_CLUSTER.lock().await;
    let mut f = ClusterFleet::start().await?;
    let subjects = Subjects::default();
    for b in BUCKETS {
        let kv = f.probe.kv_existing(&subjects.bucket(b)).await?;
        let (replicas, _) = kv.replicas().await?;
        assert_eq!(replicas, 3, "{b:?} replicas");
    }
    let id = f.mid_rollout().await?;
    let victim = server_of(&f.cluster, "phasegate-coordinator").await?;
    f.cluster.node_mut(victim).kill()?;
    f.completes(&id).await?;
    // It answers on a server it was not connected to.
    assert_ne!(
        server_of(&f.cluster, "phasegate-coordinator").await?,
        victim
    );
    Ok(())
}

/// `kill -9` of the server that leads the bucket every agent watches, in
/// the middle of a rollout: a new leader is elected, agents watch it
/// afresh, and the rollout completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_the_desired_state_leader_mid_rollout_and_the_rollout_completes()
-> anyhow::Result<()> {
    let _one = ONE_CLUSTER.lock().await;
    let mut f = ClusterFleet::start().await?;
    let desired = f
        .probe
        .kv_existing(&Subjects::default().bucket(Bucket::Desired))
        .await?;
    let id = f.mid_rollout().await?;
    let leader = wait_for("a leader of the desired bucket", PATIENCE, || async {
        match desired.replicas().await {
            Ok((_, Some(leader))) => Ok(leader),
            Ok((_, None)) => Err("no leader".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    let victim = f
        .cluster
        .index_of(&leader)
        .expect("the leader is one of ours");
    f.cluster.node_mut(victim).kill()?;
    f.completes(&id).await?;
    let (replicas, leader) = desired.replicas().await?;
    assert_eq!(replicas, 3);
    assert_ne!(leader.and_then(|l| f.cluster.index_of(&l)), Some(victim));
    Ok(())
}

/// An existing bucket with one replica is moved to the configured three
/// in place (a cluster allows it) with its values; on a single server the
/// coordinator refuses to start and says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_move_to_the_configured_replicas_or_the_coordinator_says_what_to_do()
-> anyhow::Result<()> {
    let _one = ONE_CLUSTER.lock().await;
    let cluster = NatsCluster::start(3).await?;
    let urls = cluster.urls();
    wait_jetstream(&urls, 3).await?;
    let client = phasegate_bus::connect(ConnectOptions::new(&urls, "test")).await?;
    let kv = client.kv("moved", BucketOptions::default()).await?;
    kv.put("k", "v".into()).await?;
    assert_eq!(kv.replicas().await?.0, 1);
    let three = BucketOptions {
        replicas: 3,
        ..BucketOptions::default()
    };
    let kv = client.kv("moved", three).await?;
    assert_eq!(kv.replicas().await?.0, 3);
    assert_eq!(kv.get("k").await?.map(|e| e.value), Some("v".into()));

    // One server: three replicas cannot be; the coordinator stops and
    // names the setting.
    let single = phasegate_tests::NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("coordinator.toml");
    std::fs::write(&conf, "bucket_replicas = 3\nmetrics_listen = \"off\"\n")?;
    let mut coord = spawn_phasegate(
        "coordinator",
        &[
            "coordinator",
            "--config",
            &conf.display().to_string(),
            "--nats-url",
            &single.url(),
        ],
    )?;
    let status = wait_for("the coordinator to stop", PATIENCE, || {
        let status = coord.exit_status();
        async move { status.ok_or("still running") }
    })
    .await?;
    assert!(!status.success());
    let log = coord.log_tail(20);
    assert!(
        log.contains("bucket_replicas") && log.contains("3 replicas need a JetStream cluster"),
        "{log}"
    );
    Ok(())
}

/// A hub (JetStream domain `hub`) and two regions, each a leaf node
/// server behind a link the test cuts, with an agent on each leaf that
/// names the hub's domain (by flag in one region, by variable in the
/// other). A rollout passes through both regions. Cut off, a region's
/// agent serves from disk and turns stale after its bound, the
/// coordinator counts it unreachable and holds the phase covering it in
/// `applying`; once the link is back, the agent catches up by itself and
/// the phase completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_on_leaf_nodes_roll_out_and_a_region_cut_off_serves_stale_then_catches_up()
-> anyhow::Result<()> {
    let _one = ONE_CLUSTER.lock().await;
    let hub = NatsCluster::start_with(ClusterOptions {
        size: 1,
        js_domain: Some("hub".to_owned()),
        leafnodes: true,
        ..ClusterOptions::default()
    })
    .await?;
    let hub_url = hub.urls();
    wait_jetstream(&hub_url, 1).await?;
    let leaf_port = hub.leaf_ports()[0];
    let dir = tempfile::tempdir()?;
    let (eu_link, us_link) = (
        TcpLink::start(leaf_port).await?,
        TcpLink::start(leaf_port).await?,
    );
    let leaf = |link: &TcpLink| format!("nats-leaf://127.0.0.1:{}", link.port());
    let eu_leaf = start_leaf(&dir.path().join("eu"), "eu", &leaf(&eu_link), "eu").await?;
    let us_leaf = start_leaf(&dir.path().join("us"), "us", &leaf(&us_link), "us").await?;
    let coord = coordinator(
        dir.path(),
        &format!("nats_url = \"{hub_url}\"\nmetrics_listen = \"off\"\n"),
    )?;
    let stale_after = ["--stale-after-ms", "1500"];
    let eu = AgentProc::start(
        &eu_leaf.url(),
        "eu-1",
        "eu",
        &[&stale_after[..], &["--nats-js-domain", "hub"]].concat(),
    )
    .await?;
    let us = AgentProc::start_env(
        &us_leaf.url(),
        "us-1",
        "us",
        &stale_after,
        &[("PHASEGATE_NATS_JS_DOMAIN", "hub")],
    )
    .await?;
    let _logs = LogsOnFailure(vec![&coord, &eu.proc, &us.proc]);
    let c = PhasegateClient::connect(&hub_url, "phasegate", Duration::from_secs(5)).await?;
    wait_live_agents(&c, 2).await?;

    let id = roll_out(&c, &[("eu", 200), ("us", 200)]).await?;
    wait_trigger(&c, &id, "completed through both regions", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    wait_serving(&eu, 1, false).await?;
    wait_serving(&us, 1, false).await?;

    // The US region loses its link to the hub.
    us_link.cut();
    wait_serving(&us, 1, true).await?;
    wait_for(
        "the coordinator to count us-1 unreachable",
        PATIENCE,
        || async {
            let agents = c
                .agents(Some(Segment::new("us").map_err(|e| e.to_string())?))
                .await
                .map_err(|e| e.to_string())?;
            match agents.iter().find(|a| a.agent_id.as_str() == "us-1") {
                Some(a) if !a.live => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let id = put_gate(&c, 2).await?;
    wait_trigger(&c, &id, "the US phase held in applying", |t| {
        t.current_phase_id.as_ref().map(PhaseId::as_str) == Some("us")
            && t.phase_state == Some(PhaseState::Applying)
    })
    .await?;
    wait_serving(&eu, 2, false).await?;
    // Still v1 from disk, still stale, and the phase still waits for it.
    wait_serving(&us, 1, true).await?;
    let t = c.trigger_get(id.clone()).await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying), "{t:?}");

    // The link is back: the agent catches up by itself, the phase ends.
    us_link.restore();
    wait_serving(&us, 2, false).await?;
    wait_trigger(&c, &id, "completed once the region is back", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    Ok(())
}

/// Two coordinators as the Kubernetes Deployment runs them: the leader
/// serves metrics, the standby answers `503 standing by` on the same port
/// (what the TCP probes see), and serves metrics once it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_coordinator_answers_on_its_metrics_port_and_serves_once_it_leads()
-> anyhow::Result<()> {
    let nats = phasegate_tests::NatsServer::start().await?;
    let url = nats.url();
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("coordinator.toml");
    std::fs::write(&conf, "leader_lease_ms = 1000\n")?;
    let start = |id: &str, port: u16| {
        spawn_phasegate(
            &format!("coordinator-{id}"),
            &[
                "coordinator",
                "--config",
                &conf.display().to_string(),
                "--nats-url",
                &url,
                "--instance-id",
                id,
                "--metrics-listen",
                &format!("127.0.0.1:{port}"),
            ],
        )
    };
    let (port_a, port_b) = (phasegate_tests::free_port()?, phasegate_tests::free_port()?);
    let mut a = start("a", port_a)?;
    let status = |port: u16| async move { http_status(port, "/metrics").await };
    wait_for("a leading, serving metrics", PATIENCE, || async {
        match status(port_a).await? {
            200 => Ok(()),
            code => Err(format!("{code}")),
        }
    })
    .await?;
    let _b = start("b", port_b)?;
    wait_for("b standing by, answering 503", PATIENCE, || async {
        match status(port_b).await? {
            503 => Ok(()),
            code => Err(format!("{code}")),
        }
    })
    .await?;
    a.kill()?;
    wait_for("b leading, serving metrics", PATIENCE, || async {
        match status(port_b).await? {
            200 => Ok(()),
            code => Err(format!("{code}")),
        }
    })
    .await?;
    Ok(())
}

/// The status code of `GET path` on a loopback port, read off the raw
/// response (the body may be anything).
async fn http_status(port: u16, path: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut response))
        .await
        .map_err(|_| "no answer in 2 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))
}
