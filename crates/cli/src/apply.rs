//! `phasegate apply -f FILE|DIR`: pipelines, gates and configs as code.
//!
//! A file holds any of `[[pipeline]]`, `[[gate]]` and `[[config]]` tables.
//! Everything is read and validated first (errors name the file and the
//! key), the changes are shown, and only then applied: pipelines first,
//! then configs and gates.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use phasegate_client::{ClientError, PhasegateClient};
use phasegate_model::behaviour::{is_kill_switch, normalize, same_behaviour};
use phasegate_proto::{EntityKind, EntityResult, EntitySpec, ErrorCode, Pipeline, PipelineName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::output::{json, say};
use crate::render::{self, Change};
use crate::{Format, Global};

/// Deserialises `value` and refuses keys the type does not know, so a typo
/// in a file is an error rather than a silently ignored setting.
pub(crate) fn strict<T: DeserializeOwned + Serialize>(
    value: &Value,
    origin: &str,
) -> anyhow::Result<T> {
    let parsed: T = serde_json::from_value(value.clone()).with_context(|| origin.to_owned())?;
    let back = serde_json::to_value(&parsed)?;
    if let Some(path) = unknown_key(value, &back, String::new()) {
        bail!("{origin}: unknown key {path}");
    }
    Ok(parsed)
}

fn unknown_key(input: &Value, known: &Value, at: String) -> Option<String> {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => i.iter().find_map(|(key, v)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match k.get(key) {
                None => Some(path),
                Some(kv) => unknown_key(v, kv, path),
            }
        }),
        (Value::Array(i), Value::Array(k)) => i
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(n, (v, kv))| unknown_key(v, kv, format!("{at}[{n}]"))),
        _ => None,
    }
}

/// Everything read from the files.
#[derive(Debug, Default)]
pub(crate) struct Bundle {
    pub(crate) pipelines: Vec<(String, Pipeline)>,
    pub(crate) entities: Vec<(String, EntityKind, EntitySpec)>,
}

/// `path`, or the `*.toml` files below it in name order, appended to `out`.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() || p.extension().is_some_and(|e| e == "toml") {
                collect(&p, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Reads and validates every file; nothing is sent.
pub(crate) fn load(paths: &[PathBuf]) -> anyhow::Result<Bundle> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    let mut b = Bundle::default();
    for file in files {
        b.read(&file)?;
    }
    Ok(b)
}

impl Bundle {
    /// Adds what `file` holds; a file with none of our tables is skipped,
    /// and said so.
    fn read(&mut self, file: &Path) -> anyhow::Result<()> {
        let origin = file.display().to_string();
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read {origin}"))?;
        let doc: toml::Table = toml::from_str(&text).with_context(|| origin.clone())?;
        let ours = |k: &String| matches!(k.as_str(), "pipeline" | "gate" | "config");
        if !doc.keys().any(ours) {
            // A server configuration or another file kept beside them.
            eprintln!("skipped {origin}: no [[pipeline]], [[gate]] or [[config]] in it");
            return Ok(());
        }
        for (key, value) in doc {
            let toml::Value::Array(items) = value else {
                bail!("{origin}: {key} must be an array of tables ([[{key}]])");
            };
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("{origin}: {key}[{i}]");
                self.add(&origin, &key, at, &serde_json::to_value(item)?)?;
            }
        }
        Ok(())
    }

    /// Adds one `[[key]]` table, validated; `at` names it in errors.
    fn add(&mut self, origin: &str, key: &str, at: String, json: &Value) -> anyhow::Result<()> {
        match key {
            "pipeline" => {
                let p: Pipeline = strict(json, &at)?;
                phasegate_model::validate_pipeline(&p)
                    .map_err(|e| anyhow::anyhow!("{at} ({}): {e}", p.name))?;
                self.pipelines.push((at, p));
            }
            "gate" | "config" => {
                let kind: EntityKind = key.parse()?;
                let mut s: EntitySpec = strict(json, &at)?;
                s.kind = kind;
                phasegate_model::validate_spec(&s)
                    .map_err(|e| anyhow::anyhow!("{at} ({}): {e}", s.name))?;
                self.entities.push((at, kind, s));
            }
            other => {
                bail!("{origin}: unknown table {other:?}: expected pipeline, gate or config")
            }
        }
        Ok(())
    }
}

/// The value the server has, `None` when it has none.
fn existing<T>(found: Result<T, ClientError>) -> anyhow::Result<Option<T>> {
    match found {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What applying `b` would change, asking the server what it has.
async fn changes(c: &PhasegateClient, b: &Bundle) -> anyhow::Result<Vec<Change>> {
    let mut rows = Vec::new();
    for (_, p) in &b.pipelines {
        let old = existing(c.pipeline_get(p.name.clone()).await)?;
        rows.push(Change {
            kind: "pipeline".to_owned(),
            name: p.name.to_string(),
            change: pipeline_change(old.as_ref(), p).to_owned(),
        });
    }
    for (_, kind, s) in &b.entities {
        let old = existing(c.entity_get(*kind, s.name.clone()).await)?;
        rows.push(Change {
            kind: kind.to_string(),
            name: s.name.to_string(),
            change: entity_change(old.as_ref(), s),
        });
    }
    Ok(rows)
}

fn pipeline_change(old: Option<&Pipeline>, new: &Pipeline) -> &'static str {
    match old {
        Some(old) if old == new => "unchanged",
        Some(_) => "update",
        None => "create",
    }
}

/// What putting `new` does to the entity the server has (`old`), as
/// `model::put` would decide it.
fn entity_change(old: Option<&EntityResult>, new: &EntitySpec) -> String {
    let via = |p: Option<&PipelineName>| match p {
        Some(p) => format!("rollout through pipeline {p}"),
        None => "everywhere at once".to_owned(),
    };
    let Some(old) = old else {
        return format!("create, {}", via(new.pipeline.as_ref()));
    };
    let new = normalize(new.clone());
    if old.trigger.is_some() {
        "blocked: a rollout is active".to_owned()
    } else if same_behaviour(&old.spec, &new) {
        if old.spec.description == new.description && old.spec.pipeline == new.pipeline {
            "unchanged".to_owned()
        } else {
            "metadata, everywhere at once".to_owned()
        }
    } else if old.spec.enabled && !new.enabled && is_kill_switch(&old.spec, &new) {
        "kill switch, everywhere at once".to_owned()
    } else {
        format!(
            "v{} → v{}, {}",
            old.spec.version,
            old.spec.version + 1,
            via(new.pipeline.as_ref().or(old.spec.pipeline.as_ref()))
        )
    }
}

/// `phasegate apply`.
pub(crate) async fn run(g: &Global, paths: &[PathBuf], dry_run: bool) -> anyhow::Result<()> {
    let bundle = load(paths)?;
    let c = g.client().await?;
    let changes = changes(&c, &bundle).await?;
    if g.output == Format::Table {
        render::changes(&changes);
    }
    if dry_run {
        if g.output == Format::Json {
            let v: Vec<Value> = changes
                .iter()
                .map(
                    |ch| serde_json::json!({"kind": ch.kind, "name": ch.name, "change": ch.change}),
                )
                .collect();
            println!("{}", json(&v, true)?);
        }
        return Ok(());
    }
    let results = put_all(g, &c, &bundle).await?;
    if g.output == Format::Json {
        println!("{}", json(&results, true)?);
    } else {
        say!(
            "applied {} pipeline(s), {} gate/config(s)",
            bundle.pipelines.len(),
            bundle.entities.len()
        );
    }
    Ok(())
}

/// Puts everything in `bundle`: pipelines first, then configs, then
/// gates. Returns what each put did, for `-o json`.
async fn put_all(g: &Global, c: &PhasegateClient, bundle: &Bundle) -> anyhow::Result<Vec<Value>> {
    let actor = g.actor()?;
    let mut results = Vec::new();
    for (at, p) in &bundle.pipelines {
        c.pipeline_put(p.clone(), actor.clone())
            .await
            .with_context(|| at.clone())?;
        results.push(serde_json::json!({"kind": "pipeline", "name": p.name}));
    }
    // Configs before gates: a gate's rollout may rely on a config being there.
    let mut ordered: Vec<&(String, EntityKind, EntitySpec)> = bundle.entities.iter().collect();
    ordered.sort_by_key(|(_, k, _)| *k == EntityKind::Gate);
    for (at, kind, s) in ordered {
        let r = c
            .entity_put(
                *kind,
                s.clone(),
                actor.clone(),
                Some("phasegate apply".into()),
                None,
            )
            .await
            .with_context(|| at.clone())?;
        if g.output == Format::Table {
            render::entity_applied(*kind, &r);
        }
        results.push(serde_json::json!({"kind": kind, "name": r.spec.name, "version": r.spec.version, "trigger_id": r.trigger.map(|t| t.id)}));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let v = serde_json::json!({"name": "p", "phases": [{"id": "a", "segments": ["dev"], "wiat_ms": 5}]});
        let e = strict::<Pipeline>(&v, "f.toml").unwrap_err().to_string();
        assert_eq!(e, "f.toml: unknown key phases[0].wiat_ms");
        let ok = serde_json::json!({"name": "p", "phases": [{"id": "a", "segments": ["dev"], "wait_ms": 5}]});
        assert!(strict::<Pipeline>(&ok, "f.toml").is_ok());
        // Free-form values keep their keys.
        let spec = serde_json::json!({"name": "c", "default_value": {"anything": {"nested": 1}}});
        assert!(strict::<EntitySpec>(&spec, "f.toml").is_ok());
    }
}
