//! The deployment files of `deploy/`, checked offline with the tools that
//! run them: `systemd-analyze` for the service units, the Kubernetes
//! schemas (`kubernetes-validate`, installed by `make tools`) and `kubectl
//! kustomize` for the manifests, `nats-server -t` for the NATS
//! configurations. A check whose tool is missing says so and is skipped;
//! the schema validation is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use phasegate_tests::{nats_server_binary, phasegate_binary, workspace_root};

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

/// Whether `tool` runs (`tool --version` exits 0).
fn present(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The units as installed: the binary where the unit says, here the one
/// under test (`systemd-analyze verify` checks that it is executable).
fn install_units(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let bin = phasegate_binary()?.display().to_string();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(deploy().join("systemd"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".service") {
            continue;
        }
        let unit = std::fs::read_to_string(&path)?.replace("/usr/local/bin/phasegate", &bin);
        std::fs::write(dir.join(&name), &unit)?;
        units.push((name, unit));
    }
    units.sort();
    Ok(units)
}

/// An instance name of `unit` that `systemd-analyze` can load.
fn instance(unit: &str) -> String {
    unit.replace("@.service", "@dev.service")
}

#[test]
fn systemd_units_verify_and_are_hardened() -> anyhow::Result<()> {
    if !present("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze is not installed; the units are not verified");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let units = install_units(dir.path())?;
    assert_eq!(units.len(), 2, "{units:?}");
    for (name, unit) in &units {
        for key in [
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "Restart=always",
            "CapabilityBoundingSet=\n",
        ] {
            assert!(unit.contains(key), "{name} lacks {key:?}");
        }
        let path = dir.path().join(instance(name));
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()?;
        assert!(
            out.status.success() && text(&out).trim().is_empty(),
            "{name}: {}",
            text(&out)
        );
        // systemd's own exposure score: 0 (locked down) to 10 (unsafe);
        // "OK" is below 5, we hold the units to 2.
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()?;
        let report = text(&out);
        let score: f64 = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no exposure level in\n{report}"));
        assert!(score <= 2.0, "{name}: exposure {score}\n{report}");
    }
    assert!(units[0].1.contains("StateDirectory=phasegate/agent-%i"));

    // With the secured drop-ins, as systemd merges them.
    for (unit, drop_in) in [
        ("phasegate-agent@.service", "agent-secured.conf"),
        ("phasegate-coordinator.service", "coordinator-secured.conf"),
    ] {
        let merged_dir = dir.path().join("secured");
        std::fs::create_dir_all(&merged_dir)?;
        let base = std::fs::read_to_string(dir.path().join(unit))?;
        let extra = std::fs::read_to_string(deploy().join("systemd").join(drop_in))?;
        let extra = extra.replacen("[Service]", "", 1);
        let merged = base.replacen("[Install]", &format!("{extra}\n[Install]"), 1);
        std::fs::write(merged_dir.join(unit), merged)?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(merged_dir.join(instance(unit)))
            .output()?;
        assert!(
            out.status.success() && text(&out).trim().is_empty(),
            "{unit} + {drop_in}: {}",
            text(&out)
        );
    }
    Ok(())
}

#[test]
fn nats_configs_of_the_topology_are_valid() -> anyhow::Result<()> {
    let nats = nats_server_binary()?;
    let mut checked = 0;
    for entry in std::fs::read_dir(deploy().join("nats"))? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // accounts.conf is included by the others, not a server's file.
        if !name.ends_with(".conf") || name == "accounts.conf" {
            continue;
        }
        let out = Command::new(&nats).args(["-t", "-c"]).arg(&path).output()?;
        assert!(out.status.success(), "{name}: {}", text(&out));
        checked += 1;
    }
    assert!(checked >= 3, "hub, cluster member and leaf: {checked}");
    Ok(())
}

/// The schema validator `make tools` installs (scripts/
/// install-kubernetes-validate.sh); its schemas ship with it, so it runs
/// offline.
fn kubernetes_validate() -> PathBuf {
    let bin = workspace_root().join(".tools/bin/kubernetes-validate");
    assert!(
        bin.exists(),
        "{} is missing: run `make tools` (scripts/install-kubernetes-validate.sh) to install the Kubernetes schema validator",
        bin.display()
    );
    bin
}

/// Validates `files` strictly (unknown fields refused) against the
/// Kubernetes schemas.
fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--quiet"])
        .args(files)
        .output()?;
    assert!(out.status.success(), "{files:?}:\n{}", text(&out));
    Ok(())
}

/// The resource files under `dir` (every YAML file but kustomizations).
fn resources(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A YAML file as JSON, read by the validator's own Python (PyYAML is
/// one of its dependencies).
fn yaml(path: &Path) -> anyhow::Result<serde_json::Value> {
    let python = workspace_root().join(".tools/kubernetes-validate/bin/python");
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()?;
    assert!(out.status.success(), "{}: {}", path.display(), text(&out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() -> anyhow::Result<()> {
    let k8s = deploy().join("kubernetes");
    let mut files = Vec::new();
    for dir in ["base", "components/coordinator", "examples"] {
        files.extend(resources(&k8s.join(dir))?);
    }
    assert!(files.len() >= 7, "{files:?}");
    validate(&files)?;

    // The settings the overlays give the programs load as the programs
    // load them.
    let coord =
        phasegate_coordinator::CoordinatorConfig::load(&k8s.join("overlays/hub/coordinator.toml"))?;
    assert_eq!(coord.bucket_replicas, 3);
    assert_eq!(
        coord.nats_url.as_deref().map(|u| u.split(',').count()),
        Some(3)
    );
    for overlay in ["hub", "region"] {
        phasegate_agent::AgentFile::load(&k8s.join("overlays").join(overlay).join("agent.toml"))?;
    }
    let region = phasegate_agent::AgentFile::load(&k8s.join("overlays/region/agent.toml"))?;
    assert_eq!(region.nats_js_domain.as_deref(), Some("hub"));

    // The NATS chart's values: a cluster of 3 with JetStream in the domain
    // the agents name at the hub, a leaf without JetStream in a region.
    let hub = yaml(&k8s.join("nats/hub-values.yaml"))?;
    assert_eq!(hub["config"]["cluster"]["replicas"], 3);
    assert_eq!(hub["config"]["jetstream"]["enabled"], true);
    assert_eq!(hub["config"]["jetstream"]["merge"]["domain"], "hub");
    assert_eq!(hub["config"]["leafnodes"]["enabled"], true);
    let leaf = yaml(&k8s.join("nats/region-values.yaml"))?;
    assert_eq!(leaf["config"]["jetstream"]["enabled"], false);
    assert!(leaf["config"]["leafnodes"]["merge"]["remotes"][0]["urls"].is_array());

    if !present("kubectl") {
        eprintln!("SKIPPED: kubectl is not installed; the overlays are not rendered (kustomize)");
        return Ok(());
    }
    let out_dir = tempfile::tempdir()?;
    for overlay in ["hub", "region"] {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(k8s.join("overlays").join(overlay))
            .output()?;
        assert!(out.status.success(), "{overlay}: {}", text(&out));
        let rendered = String::from_utf8(out.stdout)?;
        let path = out_dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&path, &rendered)?;
        validate(&[path])?;
        let has = |kind: &str| rendered.contains(&format!("kind: {kind}\n"));
        assert!(has("DaemonSet") && has("Namespace"), "{overlay}");
        assert!(rendered.contains("image: registry.example.com/phasegate:0.1.0"));
        if overlay == "hub" {
            assert!(
                has("Deployment") && has("PodDisruptionBudget"),
                "{rendered}"
            );
            assert!(rendered.contains("replicas: 2"), "{rendered}");
        } else {
            assert!(!has("Deployment"), "no coordinator in a region: {rendered}");
        }
    }
    Ok(())
}
