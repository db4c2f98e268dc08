//! Every subject of SPEC.md §6 against a real coordinator process on a real
//! nats-server: success cases, each error code, both encodings, and
//! malformed input of every kind answered `invalid` while it keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::time::Duration;

use phasegate_bus::{HeaderMap, headers_for};
use phasegate_client::TriggerAction;
use phasegate_proto::*;
use phasegate_tests::CoordEnv;
use phasegate_tests::NatsServerExt as _;
use phasegate_tests::rollout::actor;
use serde_json::json;

fn pipeline(v: serde_json::Value) -> Pipeline {
    serde_json::from_value(v).expect("valid pipeline json")
}

fn spec(v: serde_json::Value) -> EntitySpec {
    serde_json::from_value(v).expect("valid spec json")
}

fn code<T: std::fmt::Debug>(r: Result<T, phasegate_bus::BusError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_crud_and_errors() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let p = pipeline(json!({"name": "std", "phases": [{"id": "dev", "segments": ["dev"]}]}));
    let stored = c.pipeline_put(p.clone(), actor("alice")).await?;
    assert_eq!(stored.phases[0].pass_percentage, 100.0, "defaults filled");
    assert_eq!(c.pipeline_get(p.name.clone()).await?, stored);
    assert_eq!(c.pipeline_list().await?.len(), 1);
    // Invalid definitions name the field.
    let bad = pipeline(
        json!({"name": "bad", "phases": [{"id": "a", "segments": ["dev"], "approval": {"required": true, "approvers": ["x"], "min_approvals": 2}}]}),
    );
    let err = c
        .pipeline_put(bad, actor("alice"))
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), ErrorCode::Invalid);
    assert!(err.to_string().contains("min_approvals"), "{err}");
    let empty = pipeline(json!({"name": "bad", "phases": []}));
    assert_eq!(
        code(c.pipeline_put(empty, actor("alice")).await),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(c.pipeline_get(PipelineName::new("nope")?).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            c.pipeline_delete(PipelineName::new("nope")?, actor("a"))
                .await
        ),
        ErrorCode::NotFound
    );
    // Attached to an entity: cannot be deleted.
    c.entity_put(
        EntityKind::Gate,
        spec(json!({"name": "g", "pipeline": "std"})),
        actor("a"),
        None,
        None,
    )
    .await?;
    assert_eq!(
        code(c.pipeline_delete(p.name.clone(), actor("a")).await),
        ErrorCode::Conflict
    );
    // Attaching a pipeline that does not exist.
    let e = c
        .entity_put(
            EntityKind::Gate,
            spec(json!({"name": "h", "pipeline": "ghost"})),
            actor("a"),
            None,
            None,
        )
        .await;
    assert_eq!(code(e), ErrorCode::NotFound);
    let p2 = pipeline(json!({"name": "other", "phases": [{"id": "dev", "segments": ["dev"]}]}));
    c.pipeline_put(p2.clone(), actor("a")).await?;
    c.pipeline_delete(p2.name.clone(), actor("a")).await?;
    assert_eq!(code(c.pipeline_get(p2.name).await), ErrorCode::NotFound);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_and_configs_crud() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let r = c
        .entity_put(
            EntityKind::Gate,
            spec(json!({"name": "checkout", "rules": [{"id": "r", "pass_percentage": 5}]})),
            actor("a"),
            None,
            None,
        )
        .await?;
    assert_eq!((r.spec.version, r.spec.kind), (1, EntityKind::Gate));
    assert!(r.trigger.is_none(), "no pipeline: everywhere at once");
    let again = c
        .entity_put(
            EntityKind::Gate,
            spec(json!({"name": "checkout", "rules": [{"id": "r", "pass_percentage": 5.0}]})),
            actor("a"),
            None,
            None,
        )
        .await?;
    assert_eq!(again.spec.version, 1, "no-op");
    // Configs are a separate namespace, and the kind comes from the subject.
    let cfg = c
        .entity_put(
            EntityKind::Config,
            spec(json!({"kind": "gate", "name": "checkout", "default_value": {"limit": 3}})),
            actor("a"),
            None,
            Some(0),
        )
        .await?;
    assert_eq!(cfg.spec.kind, EntityKind::Config);
    assert_eq!(c.entity_list(EntityKind::Gate).await?.len(), 1);
    assert_eq!(c.entity_list(EntityKind::Config).await?.len(), 1);
    let got = c
        .entity_get(EntityKind::Config, EntityName::new("checkout")?)
        .await?;
    assert_eq!(got.spec.default_value["limit"], json!(3));
    // Optimistic concurrency.
    let e = c
        .entity_put(
            EntityKind::Gate,
            spec(json!({"name": "checkout", "enabled": false})),
            actor("a"),
            None,
            Some(7),
        )
        .await;
    assert_eq!(code(e), ErrorCode::Conflict);
    // Bad specs.
    let e = c
        .entity_put(
            EntityKind::Gate,
            spec(json!({"name": "x", "rules": [{"id": "r", "pass_percentage": 5, "conditions": [{"field": "app_version", "op": "version_gte", "values": ["abc"]}]}]})),
            actor("a"),
            None,
            None,
        )
        .await;
    assert_eq!(code(e), ErrorCode::Invalid);
    // Delete, then re-create continuing the numbers.
    c.entity_delete(EntityKind::Gate, EntityName::new("checkout")?, actor("a"))
        .await?;
    assert_eq!(
        code(
            c.entity_get(EntityKind::Gate, EntityName::new("checkout")?)
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            c.entity_delete(EntityKind::Gate, EntityName::new("checkout")?, actor("a"))
                .await
        ),
        ErrorCode::NotFound
    );
    let back = c
        .entity_put(
            EntityKind::Gate,
            spec(json!({"name": "checkout"})),
            actor("a"),
            None,
            None,
        )
        .await?;
    assert_eq!(back.spec.version, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_agents_lookup() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    assert_eq!(
        code(c.trigger_get(TriggerId::new("t-missing")?).await),
        ErrorCode::NotFound
    );
    let e = c
        .act(
            TriggerAction::Pause,
            TriggerId::new("t-missing")?,
            None,
            actor("a"),
            None,
        )
        .await;
    assert_eq!(code(e), ErrorCode::NotFound);
    // approve without phase_id is invalid, even for a trigger that does not exist.
    let e = c
        .act(
            TriggerAction::Approve,
            TriggerId::new("t-missing")?,
            None,
            actor("a"),
            None,
        )
        .await;
    assert_eq!(code(e), ErrorCode::Invalid);
    c.pipeline_put(
        pipeline(json!({"name": "p", "phases": [{"id": "one", "segments": ["dev"], "approval": {"required": true}}]})),
        actor("a"),
    )
    .await?;
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let r = c
            .entity_put(
                EntityKind::Gate,
                spec(json!({"name": name, "pipeline": "p"})),
                actor("a"),
                None,
                None,
            )
            .await?;
        ids.push(r.trigger.expect("a trigger").id);
    }
    let all = c.trigger_list(TriggerListRequest::default()).await?;
    assert_eq!(all.len(), 2);
    assert!(all[0].created_at_ms >= all[1].created_at_ms, "newest first");
    let only_b = c
        .trigger_list(TriggerListRequest {
            entity_name: Some(EntityName::new("b")?),
            ..TriggerListRequest::default()
        })
        .await?;
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].id, ids[1]);
    let none = c
        .trigger_list(TriggerListRequest {
            entity_kind: Some(EntityKind::Config),
            ..TriggerListRequest::default()
        })
        .await?;
    assert!(none.is_empty());
    let t = c.trigger_get(ids[0].clone()).await?;
    assert_eq!(t.phase_state, Some(PhaseState::AwaitingApproval));
    assert_eq!(c.agents(None).await?.len(), 0);
    Ok(())
}

/// Sends raw bytes and returns the decoded JSON reply.
async fn raw(
    env: &CoordEnv,
    command: Command,
    headers: HeaderMap,
    body: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    let subject = Subjects::default().command(command);
    let json = !headers.is_empty();
    let msg = env
        .client
        .bus()
        .request_bytes(&subject, headers, body)
        .await?;
    Ok(if json {
        serde_json::from_slice(&msg.payload)?
    } else {
        decode::<serde_json::Value>(Encoding::MsgPack, &msg.payload)?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_requests_get_json_replies() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let body = serde_json::to_vec(&json!({
        "pipeline": {"name": "j", "phases": [{"id": "dev", "segments": ["dev"]}]},
        "actor": "alice",
        "unknown_key": "ignored"
    }))?;
    let v = raw(
        &env,
        Command::PipelinePut,
        headers_for(Encoding::Json),
        body,
    )
    .await?;
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(
        v["result"]["pipeline"]["phases"][0]["apply_timeout_ms"],
        json!(60000)
    );
    let v = raw(
        &env,
        Command::PipelineGet,
        headers_for(Encoding::Json),
        br#"{"name": "nope"}"#.to_vec(),
    )
    .await?;
    assert_eq!(
        v,
        json!({"ok": false, "error": {"code": "not_found", "message": v["error"]["message"]}})
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_invalid_and_harmless() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let j = || headers_for(Encoding::Json);
    let cases: Vec<(&str, Command, HeaderMap, Vec<u8>)> = vec![
        ("garbage msgpack", Command::GatePut, HeaderMap::new(), vec![0xc1, 0xff, 0x00]),
        ("truncated msgpack", Command::GatePut, HeaderMap::new(), encode(Encoding::MsgPack, &json!({"spec": {"name": "g"}, "actor": "a"}))?[..6].to_vec()),
        ("bad json", Command::GatePut, j(), b"{\"spec\": ".to_vec()),
        ("json array", Command::PipelineList, j(), b"[1,2]".to_vec()),
        ("wrong type", Command::GatePut, j(), br#"{"spec": {"name": "g", "enabled": "yes"}, "actor": "a"}"#.to_vec()),
        ("string percentage", Command::GatePut, j(), br#"{"spec": {"name": "g", "rules": [{"id": "r", "pass_percentage": "50"}]}, "actor": "a"}"#.to_vec()),
        ("unknown op", Command::GatePut, j(), br#"{"spec": {"name": "g", "rules": [{"id": "r", "pass_percentage": 5, "conditions": [{"field": "email", "op": "like", "values": ["x"]}]}]}, "actor": "a"}"#.to_vec()),
        ("unknown field", Command::GatePut, j(), br#"{"spec": {"name": "g", "rules": [{"id": "r", "pass_percentage": 5, "conditions": [{"field": "mood", "op": "any", "values": ["x"]}]}]}, "actor": "a"}"#.to_vec()),
        ("bad regex", Command::GatePut, j(), br#"{"spec": {"name": "g", "rules": [{"id": "r", "pass_percentage": 5, "conditions": [{"field": "email", "op": "str_matches", "values": ["(("]}]}]}, "actor": "a"}"#.to_vec()),
        ("empty values", Command::GatePut, j(), br#"{"spec": {"name": "g", "rules": [{"id": "r", "pass_percentage": 5, "conditions": [{"field": "email", "op": "any", "values": []}]}]}, "actor": "a"}"#.to_vec()),
        ("unknown enum", Command::TriggerList, j(), br#"{"status": "exploded"}"#.to_vec()),
        ("unknown policy", Command::PipelinePut, j(), br#"{"pipeline": {"name": "p", "phases": [{"id": "a", "segments": ["dev"], "health": {"on_unhealthy": "panic"}}]}, "actor": "a"}"#.to_vec()),
        ("invalid name", Command::GatePut, j(), br#"{"spec": {"name": "Bad Name"}, "actor": "a"}"#.to_vec()),
        ("invalid segment", Command::PipelinePut, j(), br#"{"pipeline": {"name": "p", "phases": [{"id": "a", "segments": ["prod us"]}]}, "actor": "a"}"#.to_vec()),
        ("empty actor", Command::PipelineDelete, j(), br#"{"name": "p", "actor": ""}"#.to_vec()),
        ("long actor", Command::PipelineDelete, j(), format!(r#"{{"name": "p", "actor": "{}"}}"#, "x".repeat(129)).into_bytes()),
        ("missing field", Command::TriggerGet, j(), b"{}".to_vec()),
        ("oversized", Command::GatePut, j(), {
            let mut b = br#"{"actor": "a", "spec": {"name": "g", "description": ""#.to_vec();
            b.extend(std::iter::repeat_n(b'x', 300 * 1024));
            b.extend(br#""}}"#);
            b
        }),
        ("deep nesting", Command::GatePut, HeaderMap::new(), {
            let mut b = vec![0x81, 0xa4, b's', b'p', b'e', b'c'];
            b.extend(std::iter::repeat_n(0x91u8, 50_000));
            b
        }),
    ];
    for (what, command, headers, body) in cases {
        let v = raw(&env, command, headers, body).await?;
        assert_eq!(v["ok"], json!(false), "{what}: {v}");
        assert_eq!(v["error"]["code"], json!("invalid"), "{what}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{what}: the message says what is wrong"
        );
    }
    // Still serving, and nothing was stored.
    assert!(env.client.entity_list(EntityKind::Gate).await?.is_empty());
    assert!(env.client.pipeline_list().await?.is_empty());
    let mut coord = env.coord;
    assert!(coord.is_running(), "the coordinator survived");
    let status = coord.terminate(Duration::from_secs(10)).await?;
    assert!(status.success(), "clean stop on SIGTERM: {status:?}");
    Ok(())
}

/// Puts gate `name` on pipeline `p` (approval required): a trigger that
/// stays `awaiting_approval`. Returns its id.
async fn gate_with_trigger(
    c: &phasegate_client::PhasegateClient,
    name: &str,
) -> anyhow::Result<TriggerId> {
    let r = c
        .entity_put(
            EntityKind::Gate,
            spec(json!({"name": name, "pipeline": "p"})),
            actor("a"),
            None,
            None,
        )
        .await?;
    Ok(r.trigger.expect("a trigger").id)
}

async fn approval_pipeline(c: &phasegate_client::PhasegateClient) -> anyhow::Result<()> {
    c.pipeline_put(
        pipeline(json!({"name": "p", "phases": [{"id": "one", "segments": ["dev"], "approval": {"required": true}}]})),
        actor("a"),
    )
    .await?;
    Ok(())
}

/// SPEC §6 "Lists are paginated": walking `trigger.list` seven at a time
/// while triggers are created and finished between pages returns nothing
/// twice and skips nothing that was there throughout; the other lists
/// page by name, and limits and cursors are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_stably_under_concurrent_writes() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    approval_pipeline(c).await?;
    let mut present = Vec::new();
    for i in 0..110 {
        present.push(gate_with_trigger(c, &format!("g{i:03}")).await?);
    }
    let mut seen: Vec<TriggerSummary> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = c
            .trigger_list_page(&TriggerListRequest {
                limit: Some(7),
                cursor: cursor.clone(),
                ..TriggerListRequest::default()
            })
            .await?;
        assert!(page.triggers.len() <= 7);
        seen.extend(page.triggers);
        pages += 1;
        // Writes between pages: a new trigger (newest, so before the
        // cursor) and a finished one (it keeps its place in the order).
        c.entity_put(
            EntityKind::Gate,
            spec(json!({"name": format!("h{pages:03}"), "pipeline": "p"})),
            actor("a"),
            None,
            None,
        )
        .await?;
        let victim = present[(pages * 13) % present.len()].clone();
        let _ = c
            .act(TriggerAction::Abort, victim, None, actor("a"), None)
            .await;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "the walk does not end");
    }
    assert!(pages >= 110 / 7, "{pages} pages");
    let mut ids: Vec<&TriggerId> = seen.iter().map(|t| &t.id).collect();
    for w in seen.windows(2) {
        assert!(
            (std::cmp::Reverse(w[0].created_at_ms), &w[0].id)
                < (std::cmp::Reverse(w[1].created_at_ms), &w[1].id),
            "newest first, then id, strictly: {:?} then {:?}",
            w[0].id,
            w[1].id
        );
    }
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a trigger was returned twice");
    for id in &present {
        assert!(
            ids.contains(&id),
            "{id} was there throughout and was skipped"
        );
    }
    // Aborted ones are listed as finished, from the bucket.
    let aborted = c
        .trigger_list(TriggerListRequest {
            status: Some(TriggerStatus::Aborted),
            ..TriggerListRequest::default()
        })
        .await?;
    assert!(!aborted.is_empty());
    // The convenience call follows cursors past the default page of 100.
    let all = c.trigger_list(TriggerListRequest::default()).await?;
    assert_eq!(all.len(), 110 + pages);

    // Gates: by name, across pages; more than a default page in all.
    let gates = c.entity_list(EntityKind::Gate).await?;
    // (An aborted first version leaves its gate absent.)
    assert_eq!(gates.len(), 110 + pages - aborted.len());
    assert!(gates.windows(2).all(|w| w[0].name < w[1].name), "by name");
    let first = c
        .entity_list_page(
            EntityKind::Gate,
            ListRequest {
                limit: Some(7),
                cursor: None,
            },
        )
        .await?;
    assert_eq!(first.specs.len(), 7);
    let second = c
        .entity_list_page(
            EntityKind::Gate,
            ListRequest {
                limit: Some(7),
                cursor: first.next_cursor.clone(),
            },
        )
        .await?;
    assert_eq!(second.specs[0].name, gates[7].name);
    // Pipelines and agents: one short page ends the list.
    let p = c.pipeline_list_page(ListRequest::default()).await?;
    assert_eq!((p.pipelines.len(), p.next_cursor), (1, None));
    let a = c.agent_list_page(&AgentListRequest::default()).await?;
    assert_eq!((a.agents.len(), a.next_cursor), (0, None));

    // Limits and cursors.
    for limit in [0, MAX_PAGE + 1] {
        let e = c
            .pipeline_list_page(ListRequest {
                limit: Some(limit),
                cursor: None,
            })
            .await;
        assert_eq!(code(e), ErrorCode::Invalid, "limit {limit}");
    }
    let full = c
        .trigger_list_page(&TriggerListRequest {
            limit: Some(MAX_PAGE),
            ..TriggerListRequest::default()
        })
        .await?;
    assert_eq!((full.triggers.len(), full.next_cursor), (110 + pages, None));
    for bad in ["not-hex", "00ff", "abc"] {
        let e = c
            .trigger_list_page(&TriggerListRequest {
                cursor: Some(bad.to_owned()),
                ..TriggerListRequest::default()
            })
            .await;
        assert_eq!(code(e), ErrorCode::Invalid, "cursor {bad}");
        let e = c
            .agent_list_page(&AgentListRequest {
                cursor: Some(bad.to_owned()),
                ..AgentListRequest::default()
            })
            .await;
        assert_eq!(code(e), ErrorCode::Invalid, "cursor {bad}");
    }
    Ok(())
}

/// SPEC §6: finished triggers stay readable without being held in memory:
/// after a restart they are read from the triggers bucket by `get` and
/// `list`; one whose record has gone (expired) is dropped from the index;
/// the bucket's max age is `trigger_retention_days`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_triggers_are_read_from_the_bucket_after_a_restart() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    approval_pipeline(&env.client).await?;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let id = gate_with_trigger(&env.client, name).await?;
        env.client
            .act(
                TriggerAction::Abort,
                id.clone(),
                None,
                actor("op"),
                Some("no".into()),
            )
            .await?;
        ids.push(id);
    }
    let active = gate_with_trigger(&env.client, "d").await?;
    env.crash_and_restart().await?;
    let c = &env.client;
    for id in &ids {
        let t = c.trigger_get(id.clone()).await?;
        assert_eq!(t.status, TriggerStatus::Aborted);
        assert_eq!(t.history.last().map(|h| h.kind), Some(HistoryType::Aborted));
    }
    let finished = c
        .trigger_list(TriggerListRequest {
            status: Some(TriggerStatus::Aborted),
            ..TriggerListRequest::default()
        })
        .await?;
    let mut listed: Vec<TriggerId> = finished.iter().map(|t| t.id.clone()).collect();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(
        c.trigger_list(TriggerListRequest::default()).await?.len(),
        4
    );
    assert!(!c.trigger_get(active).await?.status.is_finished());

    let bus = env.nats.client("test").await?;
    let bucket = bus.kv_existing("phasegate_triggers").await?;
    assert_eq!(
        bucket.max_age().await?,
        Duration::from_secs(365 * 24 * 3600)
    );
    // A record gone from the bucket (as expiry does): not found, and no
    // longer listed.
    bucket.delete(ids[0].as_str()).await?;
    assert_eq!(
        code(c.trigger_get(ids[0].clone()).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        c.trigger_list(TriggerListRequest::default()).await?.len(),
        3
    );
    Ok(())
}

/// SPEC.md §6: `unavailable` means the command was not carried out and
/// never will be. A burst beyond what the coordinator takes at once gets
/// some `unavailable` answers; none of those puts may ever show up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_commands_never_take_effect() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let n = 1500usize;
    let answers = futures_util::future::join_all((0..n).map(|i| async move {
        let r = c
            .entity_put(
                EntityKind::Gate,
                spec(json!({"name": format!("burst-{i}")})),
                Actor::new("alice").unwrap(),
                None,
                None,
            )
            .await;
        (i, r.map(|_| ()).map_err(|e| e.code()))
    }))
    .await;
    let refused: Vec<usize> = answers
        .iter()
        .filter(|(_, r)| r == &Err(ErrorCode::Unavailable))
        .map(|(i, _)| *i)
        .collect();
    let ok = answers.iter().filter(|(_, r)| r.is_ok()).count();
    assert_eq!(ok + refused.len(), n, "only ok or unavailable: {answers:?}");
    assert!(!refused.is_empty(), "the burst was taken in full: raise it");
    // Read after the burst: exactly the ok ones exist.
    let listed: std::collections::BTreeSet<String> = c
        .entity_list(EntityKind::Gate)
        .await?
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(listed.len(), ok, "every ok put is stored");
    for i in refused {
        assert!(
            !listed.contains(&format!("burst-{i}")),
            "burst-{i} was answered unavailable but stored"
        );
    }
    Ok(())
}
