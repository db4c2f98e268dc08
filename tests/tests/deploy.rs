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
