//! Leadership on a bad day: a leader frozen (SIGSTOP) past its lease wakes
//! up after a standby took over. It must stop acting without touching the
//! lease it lost, and the new leader must go on serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::time::Duration;

use phasegate_proto::*;
use phasegate_tests::NatsServerExt as _;
use phasegate_tests::{ChildProcess, NatsServer, PATIENCE, spawn_phasegate, wait_for, wait_until};
use serde_json::json;

fn signal(p: &ChildProcess, sig: &str) -> anyhow::Result<()> {
    let pid = p.pid().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} {pid} failed");
    Ok(())
}

fn coordinator(name: &str, url: &str, conf: &str, instance: &str) -> anyhow::Result<ChildProcess> {
    spawn_phasegate(
        name,
        &[
            "coordinator",
            "--nats-url",
            url,
            "--config",
            conf,
            "--instance-id",
            instance,
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_that_wakes_up_deposed_stops_and_leaves_its_successor_alone()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let url = nats.url();
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("coordinator.toml");
    std::fs::write(&conf, "leader_lease_ms = 1000\nmetrics_listen = \"off\"\n")?;
    let conf = conf.to_str().unwrap();
    let mut a = coordinator("coordinator-a", &url, conf, "a")?;
    let client =
        phasegate_client::PhasegateClient::connect(&url, "phasegate", Duration::from_secs(2))
            .await?;
    wait_for("a to answer", PATIENCE, || async {
        client.pipeline_list().await
    })
    .await?;
    let mut b = coordinator("coordinator-b", &url, conf, "b")?;
    wait_until("b to stand by", PATIENCE, || async {
        b.log_tail(50).contains("standing by")
    })
    .await?;
    signal(&a, "-STOP")?;
    wait_for("b to take over from the frozen a", PATIENCE, || async {
        if b.log_tail(80).contains("leading") {
            client.pipeline_list().await.map_err(|e| e.to_string())
        } else {
            Err("b not leading yet".to_owned())
        }
    })
    .await?;
    signal(&a, "-CONT")?;
    // a wakes up deposed: it notices and stops, without releasing b's lease.
    wait_until("a to stop, deposed", PATIENCE, || {
        std::future::ready(!a.is_running())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}:\n{}", a.log_tail(40)))?;
    assert!(
        a.log_tail(80).contains("leadership lost"),
        "a says why it stopped:\n{}",
        a.log_tail(80)
    );
    let lease = nats
        .client("inspector")
        .await?
        .kv_existing(&Subjects::default().bucket(Bucket::Leader))
        .await?
        .get("leader")
        .await?
        .expect("a lease is held");
    assert_eq!(lease.value.as_ref(), b"b", "the lease is still b's");
    // b goes on serving, command after command, across several of its
    // lease renewals.
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    let mut n = 0u32;
    while std::time::Instant::now() < until {
        client
            .pipeline_put(
                serde_json::from_value(
                    json!({"name": format!("p{n}"), "phases": [{"id": "dev", "segments": ["dev"]}]}),
                )?,
                Actor::new("alice")?,
            )
            .await?;
        n += 1;
    }
    assert!(n > 10, "only {n} commands in 2.5 s");
    assert!(b.is_running(), "b still leads:\n{}", b.log_tail(40));
    assert_eq!(client.pipeline_list().await?.len(), n as usize);
    Ok(())
}
