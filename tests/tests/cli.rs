//! The `phasegate` CLI as operators run it, against a real coordinator and
//! agents: every example file under config/ parses and applies, exit codes
//! say what went wrong, JSON output is machine-readable, and the seed
//! pipeline is walked end to end with `trigger` commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::path::PathBuf;
use std::process::{Command, Output};

use phasegate_tests::{AgentProc, CoordEnv, PATIENCE, phasegate_binary, wait_for, workspace_root};
use serde_json::{Value, json};

fn config_dir() -> PathBuf {
    workspace_root().join("config")
}

/// Runs `phasegate <args>` against `url`.
fn cli(url: &str, args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(phasegate_binary()?)
        .args(args)
        .env("PHASEGATE_NATS_URL", url)
        .env("PHASEGATE_ACTOR", "ci-bot")
        .output()?)
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn every_server_config_file_parses() -> anyhow::Result<()> {
    let c = phasegate_coordinator::CoordinatorConfig::load(&config_dir().join("coordinator.toml"))?;
    assert_eq!(c.subject_prefix, "phasegate");
    let mut n = 0;
    for e in std::fs::read_dir(config_dir().join("agents"))? {
        let path = e?.path();
        let f = phasegate_agent::AgentFile::load(&path)?;
        let segment = phasegate_proto::Segment::new(f.segment.clone().expect("segment set"))?;
        let mut cfg = phasegate_agent::AgentConfig::new(segment, "nats://127.0.0.1:4222");
        cfg.health_urls = f.health_urls.clone();
        cfg.heartbeat_ms = f.heartbeat_ms.unwrap_or(cfg.heartbeat_ms);
        cfg.stale_after_ms = f.stale_after_ms.unwrap_or(cfg.stale_after_ms);
        cfg.probe_timeout_ms = f.probe_timeout_ms.unwrap_or(cfg.probe_timeout_ms);
        cfg.unhealthy_after = f.unhealthy_after.unwrap_or(cfg.unhealthy_after);
        cfg.healthy_after = f.healthy_after.unwrap_or(cfg.healthy_after);
        cfg.check(&path.display().to_string())?;
        n += 1;
    }
    assert_eq!(n, 5, "one example per seed segment");
    // A typo is an error that names the file and the key.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "segment = \"dev\"\nheartbeat = 5\n")?;
    let e = phasegate_agent::AgentFile::load(&bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("heartbeat"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_every_example_then_walk_the_seed_pipeline() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let url = env.nats.url();
    let dir = config_dir();
    let dir = dir.to_str().unwrap();
    // Dry run: validates and shows the plan, changes nothing.
    let o = cli(&url, &["apply", "--dry-run", "-f", dir])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains("pipeline  seed") && plan.contains("create"),
        "{plan}"
    );
    assert!(env.client.pipeline_list().await?.is_empty());
    // Every file under config/ applies (the server configs are skipped by
    // apply only because they are not pipeline/gate/config files).
    let o = cli(
        &url,
        &[
            "apply",
            "-o",
            "json",
            "-f",
            &format!("{dir}/pipelines"),
            "-f",
            &format!("{dir}/gates"),
            "-f",
            &format!("{dir}/configs"),
        ],
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let applied = json_out(&o);
    assert_eq!(applied.as_array().map(Vec::len), Some(5), "{applied}");
    let o = cli(&url, &["pipeline", "list", "-o", "json"])?;
    let names: Vec<String> = json_out(&o)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["fast-lane", "metric-gated", "seed"]);
    // Creating the gate through the seed pipeline started a rollout.
    let o = cli(
        &url,
        &["trigger", "list", "-o", "json", "--entity", "new-checkout"],
    )?;
    let list = json_out(&o);
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["current_phase_id"], json!("dev"));
    // Walk it with the CLI: skip the long bakes, approve where needed.
    let o = cli(&url, &["trigger", "skip", &id])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("acting on phase dev"));
    let o = cli(&url, &["trigger", "skip", &id, "--phase", "staging"])?;
    assert!(o.status.success());
    // prod-us-west requires approval by a listed approver.
    let o = cli(&url, &["trigger", "approve", &id])?;
    assert_eq!(
        o.status.code(),
        Some(5),
        "forbidden: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("error: forbidden: ")),
        "one clear line: {err}"
    );
    let o = cli(
        &url,
        &[
            "trigger",
            "approve",
            &id,
            "--actor",
            "release-manager",
            "-m",
            "go",
        ],
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(
        &url,
        &[
            "trigger",
            "approve",
            &id,
            "--phase",
            "staging",
            "--actor",
            "sre-oncall",
        ],
    )?;
    assert_eq!(o.status.code(), Some(4), "conflict: wrong phase");
    let o = cli(&url, &["trigger", "get", &id])?;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("prod-us-west") && text.contains("approved"),
        "{text}"
    );
    // Pause, then a watch in the background sees the end.
    let o = cli(
        &url,
        &["trigger", "pause", &id, "-m", "checking dashboards"],
    )?;
    assert!(o.status.success());
    let o = cli(&url, &["trigger", "pause", &id])?;
    assert_eq!(o.status.code(), Some(4), "already paused");
    // A watch started now follows the rollout to its end.
    let watch = Command::new(phasegate_binary()?)
        .args(["trigger", "watch", &id, "--interval-ms", "50"])
        .env("PHASEGATE_NATS_URL", &url)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Full roll-out past prod-eu, which release-manager may approve.
    let o = cli(
        &url,
        &["trigger", "rollout", &id, "--actor", "release-manager"],
    )?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = watch.wait_with_output()?;
    assert_eq!(out.status.code(), Some(0), "watch exits 0 on completion");
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(
        lines.contains("rollout") && lines.contains("completed"),
        "{lines}"
    );
    let o = cli(&url, &["gate", "get", "new-checkout", "-o", "json"])?;
    let g = json_out(&o);
    assert_eq!(
        (g["spec"]["version"].clone(), g["trigger"].clone()),
        (json!(1), Value::Null)
    );

    // The config's rollout, aborted while watched: exit 20.
    let o = cli(
        &url,
        &[
            "trigger",
            "list",
            "-o",
            "json",
            "--kind",
            "config",
            "--status",
            "in_progress",
        ],
    )?;
    let cid = json_out(&o)[0]["id"].as_str().unwrap().to_owned();
    let watch = Command::new(phasegate_binary()?)
        .args(["trigger", "watch", &cid, "--interval-ms", "50"])
        .env("PHASEGATE_NATS_URL", &url)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let o = cli(&url, &["trigger", "abort", &cid, "-m", "not today"])?;
    assert!(o.status.success());
    assert_eq!(
        watch.wait_with_output()?.status.code(),
        Some(20),
        "watch exits 20 on abort"
    );

    // Exit codes by error code, one clear line each.
    let o = cli(&url, &["gate", "get", "nope"])?;
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("g.toml");
    std::fs::write(
        &bad,
        "name = \"g\"\n[[rules]]\nid = \"r\"\npass_percentage = 150\n",
    )?;
    let o = cli(&url, &["gate", "put", "-f", bad.to_str().unwrap()])?;
    assert_eq!(
        o.status.code(),
        Some(2),
        "invalid: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&bad, "name = \"g\"\nenabeld = false\n")?;
    let o = cli(&url, &["gate", "put", "-f", bad.to_str().unwrap()])?;
    assert_eq!(
        o.status.code(),
        Some(1),
        "a typo is refused before anything is sent"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown key enabeld"));
    let o = cli(&url, &["pipeline", "delete", "seed"])?;
    assert_eq!(o.status.code(), Some(4), "attached to new-checkout");
    // Without a coordinator: unavailable.
    let o = cli(
        "nats://127.0.0.1:1",
        &["pipeline", "list", "--timeout-ms", "300"],
    )?;
    assert_ne!(o.status.code(), Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_listing_in_json_and_tables() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let url = env.nats.url();
    let _dev = AgentProc::start(&url, "dev-1", "dev", &["--tier", "development"]).await?;
    let v = wait_for("the agent listed", PATIENCE, || async {
        let o = cli(&url, &["agents", "-o", "json"]).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
        if v.as_array().is_some_and(|a| a.len() == 1) {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await?;
    assert_eq!(v[0]["agent_id"], json!("dev-1"));
    assert_eq!(v[0]["tier"], json!("development"));
    assert_eq!(v[0]["live"], json!(true));
    let o = cli(&url, &["agents"])?;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("AGENT") && text.contains("dev-1"),
        "{text}"
    );
    Ok(())
}

#[test]
fn deploy_nats_configs_are_valid() -> anyhow::Result<()> {
    for conf in ["hub.conf", "leaf.conf"] {
        let path = workspace_root().join("deploy/nats").join(conf);
        let out = Command::new(phasegate_tests::nats_server_binary()?)
            .args(["-t", "-c"])
            .arg(&path)
            .output()?;
        assert!(
            out.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// SPEC §7: an operator command that cannot reach NATS says so at once, in
/// one line naming the URL (never its credentials) and the cause, and exits
/// non-zero; it logs nothing else.
#[test]
fn unreachable_nats_is_one_line_at_once() -> anyhow::Result<()> {
    // A port that was free a moment ago: nobody listens there.
    let port = phasegate_tests::free_port()?;
    let url = format!("nats://user:secret@127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let out = Command::new(phasegate_binary()?)
        .args(["gate", "list", "--nats-url", &url])
        .env_remove("RUST_LOG")
        .output()?;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "must fail: {stderr}");
    assert!(out.status.code().is_some(), "exited, not killed: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "names the URL: {stderr}"
    );
    assert!(!stderr.contains("secret"), "credentials leaked: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        took < std::time::Duration::from_secs(3),
        "answered in {took:?}, not at once"
    );
    Ok(())
}

/// Bytes a terminal would obey: C0 controls but newline, DEL, and C1
/// controls (UTF-8 `C2 80`–`C2 9F`).
fn terminal_controls(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    text.chars()
        .filter(|&c| c != '\n' && (c.is_control() || c == '\u{202e}'))
        .map(|c| format!("{:?}", c))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_text_never_reaches_the_terminal_as_controls() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let url = env.nats.url();
    let c = &env.client;
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}";
    // An agent whose tier is hostile, for `agents`.
    let tier = format!("prod{evil}");
    let _dev = AgentProc::start(&url, "dev-1", "dev", &["--tier", &tier]).await?;
    // A pipeline awaiting approval by alice, a gate put through it by a
    // hostile actor with a hostile comment and description.
    c.pipeline_put(
        serde_json::from_value(json!({"name": "p", "description": format!("d{evil}"), "phases": [
            {"id": "one", "segments": ["dev"], "approval": {"required": true, "approvers": ["alice"]}}
        ]}))?,
        phasegate_proto::Actor::new(format!("mallory{evil}"))?,
    )
    .await?;
    let r = c
        .entity_put(
            phasegate_proto::EntityKind::Gate,
            serde_json::from_value(
                json!({"name": "g", "pipeline": "p", "description": format!("about{evil}")}),
            )?,
            phasegate_proto::Actor::new(format!("mallory{evil}"))?,
            Some(format!("comment{evil}")),
            None,
        )
        .await?;
    let id = r.trigger.expect("a trigger").id.to_string();
    let checked = |what: &str, o: &Output| {
        for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            let bad = terminal_controls(bytes);
            assert!(
                bad.is_empty(),
                "{what}: {stream} carries {bad:?}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The history shows the actor and comment, escaped.
    let o = cli(&url, &["trigger", "get", &id])?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = checked("trigger get", &o);
    assert!(
        text.contains(r"comment\x1b[2J\x1b]0;pwned\x07\u{9b}31m\u{202e}")
            && text.contains(r"mallory\x1b[2J"),
        "{text}"
    );
    // A server error quoting a hostile actor goes to stderr escaped.
    let o = cli(
        &url,
        &["trigger", "approve", &id, "--actor", &format!("eve{evil}")],
    )?;
    assert!(!o.status.success(), "eve may not approve");
    checked("refused approve", &o);
    // Tables and lines of other commands.
    for args in [
        &["gate", "get", "g"][..],
        &["gate", "list"],
        &["pipeline", "get", "p"],
        &["pipeline", "list"],
        &["trigger", "list"],
    ] {
        let o = cli(&url, args)?;
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        checked(&args.join(" "), &o);
    }
    let o = wait_for("the agent listed", PATIENCE, || async {
        let o = cli(&url, &["agents"]).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if text.contains("dev-1") {
            Ok(o)
        } else {
            Err(text)
        }
    })
    .await?;
    let text = checked("agents", &o);
    assert!(text.contains(r"prod\x1b[2J"), "{text}");
    // JSON carries the text exactly, with nothing raw a terminal obeys.
    let o = cli(&url, &["trigger", "get", &id, "-o", "json"])?;
    checked("trigger get -o json", &o);
    let v = json_out(&o);
    assert_eq!(v["history"][0]["comment"], json!(format!("comment{evil}")));
    // Aborted with a hostile comment, a watch prints the history as lines.
    c.act(
        phasegate_client::TriggerAction::Abort,
        phasegate_proto::TriggerId::new(id.clone())?,
        None,
        phasegate_proto::Actor::new(format!("mallory{evil}"))?,
        Some(format!("bye{evil}")),
    )
    .await?;
    let o = cli(&url, &["trigger", "watch", &id])?;
    assert_eq!(
        o.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = checked("trigger watch", &o);
    assert!(text.contains(r"bye\x1b[2J"), "{text}");
    let o = cli(&url, &["trigger", "watch", &id, "-o", "json"])?;
    checked("trigger watch -o json", &o);
    Ok(())
}
