//! Secured installations (SPEC.md §8): the output of `phasegate auth init`
//! served by a real nats-server; every program connecting with its own
//! credentials (and over TLS with client certificates); least privilege
//! enforced by the server; no secret in any error or log line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use phasegate_bus::{ConnectOptions, HeaderMap, HeaderName, Security};
use phasegate_client::PhasegateClient;
use phasegate_proto::{Bucket, Subjects, TriggerStatus};
use phasegate_tests::rollout::{put_gate, put_pipeline, wait_trigger};
use phasegate_tests::secured::{AuthDir, Probe, Tls};
use phasegate_tests::{
    AgentProc, ChildProcess, NatsServer, PATIENCE, phasegate_binary, spawn_phasegate,
    spawn_phasegate_env, wait_for, wait_live_agents,
};
use serde_json::json;

fn creds(path: &Path) -> Security {
    Security {
        creds: Some(path.to_path_buf()),
        ..Security::default()
    }
}

async fn operator(url: &str, security: Security) -> anyhow::Result<PhasegateClient> {
    Ok(
        PhasegateClient::connect_secured(url, security, "phasegate", Duration::from_secs(5))
            .await?,
    )
}

/// A rollout through one phase of segment `dev`, acked by its agent.
async fn roll_out(c: &PhasegateClient, agent: &AgentProc) -> anyhow::Result<()> {
    put_pipeline(
        c,
        json!({"name": "p", "phases": [{"id": "dev", "segments": ["dev"]}]}),
    )
    .await?;
    let r = put_gate(
        c,
        json!({"name": "g", "pipeline": "p", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    let id = r.trigger.expect("a trigger").id;
    wait_trigger(c, &id, "completed", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    let v = agent.check_gate("g", json!({"user_id": "u"})).await?;
    assert_eq!(v["value"], json!(true), "{v}");
    Ok(())
}

/// The coordinator of `auth`'s installation, with its credentials (and no
/// `[auth]` table: actors as declared).
fn coordinator(url: &str, auth: &AuthDir, envs: &[(&str, &str)]) -> anyhow::Result<ChildProcess> {
    let creds = auth.file("coordinator.creds").display().to_string();
    spawn_phasegate_env(
        "coordinator",
        &[
            "coordinator",
            "--nats-url",
            url,
            "--nats-creds",
            &creds,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        envs,
    )
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(phasegate_binary()?);
    cmd.args(args)
        .env_remove("PHASEGATE_NATS_URL")
        .env_remove("PHASEGATE_NATS_CREDS");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

#[tokio::test]
async fn a_secured_installation_refuses_anonymous_and_runs_a_rollout() -> anyhow::Result<()> {
    let auth = AuthDir::init(&["dev"], &["alice:admin"])?;
    let nats = auth.serve().await?;
    let url = nats.url();

    let anonymous =
        phasegate_bus::connect(ConnectOptions::new(&url, "anonymous").fail_fast()).await;
    let err = anonymous
        .expect_err("an anonymous connection is refused")
        .to_string();
    assert!(err.to_lowercase().contains("authorization"), "{err}");

    let _coord = coordinator(&url, &auth, &[])?;
    let agent_creds = auth.file("agent-dev.creds").display().to_string();
    let agent = AgentProc::start(&url, "dev-1", "dev", &["--nats-creds", &agent_creds]).await?;
    let alice = auth.file("operator-alice.creds");
    let c = operator(&url, creds(&alice)).await?;
    wait_live_agents(&c, 1).await?;
    roll_out(&c, &agent).await?;

    // The operator CLI, with its credentials from the environment.
    let out = cli(
        &["--nats-url", &url, "-o", "json", "trigger", "list"],
        &[("PHASEGATE_NATS_CREDS", &alice.display().to_string())],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed"));

    // (d) The operator sends commands through the import, and nothing else.
    let mut probe = Probe::connect(&url, &alice).await?;
    let reply = probe
        .nats
        .request("phasegate.v1.pipeline.list", "{}".into())
        .await?;
    assert!(!reply.payload.is_empty());
    let subjects = Subjects::default();
    for bucket in Bucket::ALL {
        let b = subjects.bucket(bucket);
        probe
            .expect_refused(&format!("$KV.{b}.x"), HeaderMap::new())
            .await?;
        probe
            .expect_refused(&format!("$JS.API.STREAM.INFO.KV_{b}"), HeaderMap::new())
            .await?;
    }
    probe
        .expect_refused("phasegate.v1.internal.report.dev", HeaderMap::new())
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_may_read_desired_state_and_report_for_its_segment_only() -> anyhow::Result<()> {
    let auth = AuthDir::init(&["dev", "staging"], &[])?;
    let nats = auth.serve().await?;
    let url = nats.url();
    let mut probe = Probe::connect(&url, &auth.file("agent-dev.creds")).await?;
    let subjects = Subjects::default();
    let mut delete = HeaderMap::new();
    delete.insert(HeaderName::from_static("KV-Operation"), "DEL");
    for bucket in Bucket::ALL {
        let b = subjects.bucket(bucket);
        probe
            .expect_refused(&format!("$KV.{b}.k"), HeaderMap::new())
            .await?;
        probe
            .expect_refused(&format!("$KV.{b}.k"), delete.clone())
            .await?;
        for op in ["PURGE", "DELETE", "UPDATE", "CREATE"] {
            probe
                .expect_refused(&format!("$JS.API.STREAM.{op}.KV_{b}"), HeaderMap::new())
                .await?;
        }
    }
    probe
        .expect_refused("phasegate.v1.internal.report.staging", HeaderMap::new())
        .await?;
    probe
        .expect_allowed(
            "phasegate.v1.internal.report.dev",
            "phasegate.v1.internal.report.x",
        )
        .await?;
    // A command is refused by the server: it never reaches a responder.
    probe
        .expect_refused("phasegate.v1.gate.list", HeaderMap::new())
        .await?;
    let agent = phasegate_bus::connect(
        ConnectOptions::new(&url, "agent")
            .with_security(creds(&auth.file("agent-dev.creds")))
            .with_request_timeout(Duration::from_millis(300))
            .fail_fast(),
    )
    .await?;
    let sent = agent
        .request_bytes("phasegate.v1.gate.list", HeaderMap::new(), "{}")
        .await;
    assert!(sent.is_err(), "an agent's command got an answer");
    Ok(())
}

#[tokio::test]
async fn agents_connect_over_tls_with_client_certificates() -> anyhow::Result<()> {
    let auth = AuthDir::init(&["dev"], &["alice:admin"])?;
    let tls = Tls::generate()?;
    let conf = tls.server_conf(&auth.server_conf())?;
    let nats = NatsServer::start_with_config(&conf).await?;
    let url = nats.url();
    let path = |f: &str| tls.file(f).display().to_string();

    // Credentials alone are not enough: the server wants TLS and a
    // client certificate.
    let plain = operator(&url, creds(&auth.file("operator-alice.creds"))).await;
    assert!(plain.is_err(), "a connection without TLS is refused");

    let envs = [
        ("PHASEGATE_TLS_CA", path("ca.pem")),
        ("PHASEGATE_TLS_CERT", path("client.pem")),
        ("PHASEGATE_TLS_KEY", path("client-key.pem")),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _coord = coordinator(&url, &auth, &envs)?;
    let agent_creds = auth.file("agent-dev.creds").display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));
    let agent = AgentProc::start(
        &url,
        "dev-tls",
        "dev",
        &[
            "--nats-creds",
            &agent_creds,
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )
    .await?;
    let security = Security {
        creds: Some(auth.file("operator-alice.creds")),
        tls_ca: Some(tls.file("ca.pem")),
        tls_cert: Some(tls.file("client.pem")),
        tls_key: Some(tls.file("client-key.pem")),
    };
    let c = operator(&url, security).await?;
    wait_live_agents(&c, 1).await?;
    roll_out(&c, &agent).await?;
    Ok(())
}

#[tokio::test]
async fn failed_connections_print_no_secret() -> anyhow::Result<()> {
    let auth = AuthDir::init(&["dev"], &[])?;
    let nats = auth.serve().await?;
    let port = nats.port();
    let secret = "hunter2-not-a-real-password";
    let verbose = [("RUST_LOG", "trace")];

    for url in [
        format!("nats://alice:{secret}@127.0.0.1:{port}"),
        format!("nats://{secret}@127.0.0.1:{port}"),
    ] {
        let out = cli(&["--nats-url", &url, "-vvv", "gate", "list"], &verbose)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("cannot connect to nats at nats://***@127.0.0.1"),
            "{text}"
        );
        assert!(!text.contains(secret), "a secret was printed:\n{text}");
    }

    // A credentials file the server does not know, and one that is not a
    // credentials file: neither seed appears.
    let dir = tempfile::tempdir()?;
    let other = AuthDir::init(&["dev"], &[])?;
    let unknown = other.file("agent-dev.creds");
    let unknown_seed = phasegate_tests::secured::seed_of(&unknown)?;
    let broken = dir.path().join("broken.creds");
    let broken_seed = "SUBROKENSEEDTHATMUSTNEVERBEPRINTED";
    std::fs::write(
        &broken,
        format!("-----BEGIN USER NKEY SEED-----\n{broken_seed}\n------END USER NKEY SEED------\n"),
    )?;
    let url = nats.url();
    for (file, seed) in [(&unknown, unknown_seed.as_str()), (&broken, broken_seed)] {
        let f = file.display().to_string();
        let out = cli(
            &[
                "--nats-url",
                &url,
                "--nats-creds",
                &f,
                "-vvv",
                "gate",
                "list",
            ],
            &verbose,
        )?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{text}");
        assert!(!text.contains(seed), "a seed was printed:\n{text}");

        // A server with the same credentials logs its failure, without
        // the seed either.
        let mut agent = spawn_phasegate_env(
            "agent",
            &[
                "agent",
                "--segment",
                "dev",
                "--nats-url",
                &url,
                "--nats-creds",
                &f,
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                &dir.path().join("state").display().to_string(),
            ],
            &verbose,
        )?;
        wait_for(
            "the agent to log its refused connection",
            PATIENCE,
            || async {
                let log = std::fs::read_to_string(agent.log_path()).unwrap_or_default();
                let l = log.to_lowercase();
                if l.contains("authorization") || l.contains("authentication") || l.contains("nkey")
                {
                    Ok(())
                } else {
                    Err("no connection failure logged yet")
                }
            },
        )
        .await?;
        let log = std::fs::read_to_string(agent.log_path())?;
        agent.kill()?;
        assert!(!log.contains(seed), "a seed was logged:\n{log}");
    }
    Ok(())
}

#[test]
fn a_rerun_keeps_identities_and_the_configuration_stays_valid() -> anyhow::Result<()> {
    let auth = AuthDir::init(&["dev"], &["alice"])?;
    let before = std::fs::read_to_string(auth.file("agent-dev.creds"))?;
    auth.rerun(&["prod-eu"], &["bob:editor"])?;
    assert_eq!(
        std::fs::read_to_string(auth.file("agent-dev.creds"))?,
        before
    );
    assert!(auth.file("agent-prod-eu.creds").is_file());
    let out = Command::new(phasegate_tests::nats_server_binary()?)
        .args(["-t", "-c"])
        .arg(auth.server_conf())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(auth.file("coordinator.toml"))?;
    assert!(
        toml.contains("[auth.operators.bob]") && toml.contains("role = \"editor\""),
        "{toml}"
    );
    Ok(())
}

/// §8: the actor is the sender's authenticated identity, roles gate
/// commands, and approvals are identities: `min_approvals: 2` needs two.
#[tokio::test]
async fn actors_are_identities_and_roles_are_enforced() -> anyhow::Result<()> {
    let auth = AuthDir::init(
        &["dev"],
        &["alice:admin", "bob:editor", "carol:viewer", "dave:editor"],
    )?;
    let nats = auth.serve().await?;
    let url = nats.url();
    let conf = auth.file("coordinator.toml").display().to_string();
    let coord = spawn_phasegate(
        "coordinator",
        &[
            "coordinator",
            "--nats-url",
            &url,
            "--config",
            &conf,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )?;
    let who = |n: &str| creds(&auth.file(&format!("operator-{n}.creds")));
    let alice = operator(&url, who("alice")).await?;
    let bob = operator(&url, who("bob")).await?;
    let carol = operator(&url, who("carol")).await?;
    let dave = operator(&url, who("dave")).await?;
    wait_for("the coordinator", PATIENCE, || async {
        alice.pipeline_list().await
    })
    .await?;
    assert!(
        !coord.log_tail(200).contains("running open"),
        "{}",
        coord.log_tail(40)
    );

    let pipeline = json!({"name": "p", "phases": [{"id": "dev", "segments": ["dev"],
        "approval": {"required": true, "approvers": ["bob", "dave"], "min_approvals": 2}}]});
    // An editor may not define pipelines; an admin may.
    let err = put_pipeline(&bob, pipeline.clone())
        .await
        .expect_err("editor");
    assert!(err.to_string().contains("forbidden"), "{err}");
    put_pipeline(&alice, pipeline).await?;
    // A viewer may read but not put.
    let err = put_gate(&carol, json!({"name": "g", "pipeline": "p"}))
        .await
        .expect_err("viewer");
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert!(carol.pipeline_list().await?.len() == 1);
    // bob puts, declaring himself alice: the history says bob.
    let t = bob
        .entity_put(
            phasegate_proto::EntityKind::Gate,
            serde_json::from_value(json!({"name": "g", "pipeline": "p"}))?,
            phasegate_proto::Actor::new("alice")?,
            None,
            None,
        )
        .await?
        .trigger
        .expect("a trigger");
    assert_eq!(t.created_by.as_str(), "bob");
    let phase = t.current_phase_id.clone();
    let approve = |c: &PhasegateClient, declared: &str| {
        let (c, id, phase) = (c.clone(), t.id.clone(), phase.clone());
        let declared = phasegate_proto::Actor::new(declared).expect("actor");
        async move {
            c.act(
                phasegate_client::TriggerAction::Approve,
                id,
                phase,
                declared,
                None,
            )
            .await
        }
    };
    // carol claims to be bob: she is carol, and no approver.
    let err = approve(&carol, "bob")
        .await
        .expect_err("carol is no approver");
    assert_eq!(err.code(), phasegate_proto::ErrorCode::Forbidden, "{err}");
    // bob approves (declaring alice); bob again is no second approval.
    let after = approve(&bob, "alice").await?;
    assert_eq!(after.approvals.len(), 1);
    assert_eq!(after.approvals[0].actor.as_str(), "bob");
    let err = approve(&bob, "dave")
        .await
        .expect_err("one identity, one approval");
    assert_eq!(err.code(), phasegate_proto::ErrorCode::Conflict, "{err}");
    // A second identity completes it.
    approve(&dave, "dave").await?;
    let done = wait_trigger(&alice, &t.id, "completed", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    let approvers: Vec<&str> = done
        .history
        .iter()
        .filter(|h| h.kind == phasegate_proto::HistoryType::Approved)
        .map(|h| h.actor.as_str())
        .collect();
    assert_eq!(approvers, vec!["bob", "dave"]);
    Ok(())
}
