//! Request/reply through `phasegate-bus` against a real nats-server: both
//! encodings, error replies, malformed bodies, no responders, timeouts.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures_util::StreamExt as _;
use phasegate_bus::{BusError, Client, ConnectOptions, HeaderMap, encoding_of, headers_for, reply};
use phasegate_proto::{
    ApiError, Command, Encoding, ErrorCode, PipelineGetRequest, PipelineName, Reply, decode,
};
use phasegate_tests::NatsServer;
use phasegate_tests::NatsServerExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the test responder answers: the name upper-cased and the encoding
/// it read the request in.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Echoed {
    name: String,
    encoding: String,
}

/// The name the responder pretends not to know.
const MISSING: &str = "missing";

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::MsgPack => "msgpack",
        Encoding::Json => "json",
    }
}

/// Serves `pipeline.get` on its own connection, the way a service does:
/// decode in the request's encoding, answer in it. Returns once the
/// subscription is in place on the server.
async fn start_responder(server: &NatsServer) -> anyhow::Result<Client> {
    let client = server.client("responder").await?;
    let subject = client.subjects().command(Command::PipelineGet);
    let mut requests = client.nats().subscribe(subject).await?;
    // After a round trip the server has the subscription: no request misses it.
    client.ping().await?;
    let serving = client.clone();
    tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let encoding = encoding_of(&message);
            let answer = match decode::<PipelineGetRequest>(encoding, &message.payload) {
                Err(e) => Reply::err(ApiError::invalid(e.to_string())),
                Ok(req) if req.name.as_str() == MISSING => Reply::err(ApiError::not_found(
                    format!("no pipeline named {}", req.name.as_str()),
                )),
                Ok(req) => Reply::ok(Echoed {
                    name: req.name.as_str().to_uppercase(),
                    encoding: encoding_name(encoding).to_owned(),
                }),
            };
            if let Err(e) = reply(&serving, &message, &answer, encoding).await {
                eprintln!("responder cannot answer: {e}");
            }
        }
    });
    Ok(client)
}

fn get(name: &str) -> anyhow::Result<PipelineGetRequest> {
    Ok(PipelineGetRequest {
        name: PipelineName::new(name)?,
    })
}

#[tokio::test]
async fn msgpack_round_trip() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let _responder = start_responder(&server).await?;
    let client = server.client("caller").await?;

    let echoed: Echoed = client
        .request(Command::PipelineGet, &get("checkout")?, Encoding::MsgPack)
        .await?;
    assert_eq!(
        echoed,
        Echoed {
            name: "CHECKOUT".into(),
            encoding: "msgpack".into(),
        }
    );

    // On the wire: a MessagePack map in, a MessagePack map out, no header.
    let subject = client.subjects().command(Command::PipelineGet);
    let body = phasegate_proto::encode(Encoding::MsgPack, &get("search")?)?;
    let raw = client
        .request_bytes(&subject, HeaderMap::new(), body)
        .await?;
    ensure!(
        raw.headers.as_ref().is_none_or(|h| h.is_empty()),
        "{:?}",
        raw.headers
    );
    let value: serde_json::Value = decode(Encoding::MsgPack, &raw.payload)?;
    assert_eq!(
        value,
        json!({"ok": true, "result": {"name": "SEARCH", "encoding": "msgpack"}})
    );
    Ok(())
}

#[tokio::test]
async fn json_round_trip() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let _responder = start_responder(&server).await?;
    let client = server.client("caller").await?;

    let echoed: Echoed = client
        .request(Command::PipelineGet, &get("checkout")?, Encoding::Json)
        .await?;
    assert_eq!(
        echoed.encoding, "json",
        "the responder saw the Content-Type"
    );

    // What a person with the nats CLI would send and see.
    let subject = client.subjects().command(Command::PipelineGet);
    let raw = client
        .request_bytes(
            &subject,
            headers_for(Encoding::Json),
            br#"{"name": "checkout", "unknown": "ignored"}"#.as_slice(),
        )
        .await?;
    let value: serde_json::Value =
        serde_json::from_slice(&raw.payload).context("the reply is JSON")?;
    assert_eq!(
        value,
        json!({"ok": true, "result": {"name": "CHECKOUT", "encoding": "json"}})
    );
    assert_eq!(encoding_of(&raw), Encoding::Json, "the reply says so too");
    Ok(())
}

#[tokio::test]
async fn refusals_map_to_api_errors() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let _responder = start_responder(&server).await?;
    let client = server.client("caller").await?;

    for encoding in [Encoding::MsgPack, Encoding::Json] {
        let err = client
            .request::<_, Echoed>(Command::PipelineGet, &get(MISSING)?, encoding)
            .await
            .err()
            .context("a missing pipeline is refused")?;
        match &err {
            BusError::Api(e) => {
                assert_eq!(e.code, ErrorCode::NotFound);
                assert_eq!(e.message, "no pipeline named missing");
            }
            other => anyhow::bail!("expected an api error, got {other:?}"),
        }
        assert_eq!(err.code(), ErrorCode::NotFound);
    }
    Ok(())
}

#[tokio::test]
async fn malformed_requests_are_answered_invalid() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let _responder = start_responder(&server).await?;
    let client = server.client("caller").await?;
    let subject = client.subjects().command(Command::PipelineGet);

    let raw = client
        .request_bytes(
            &subject,
            headers_for(Encoding::Json),
            b"{not json".as_slice(),
        )
        .await?;
    let value: serde_json::Value = serde_json::from_slice(&raw.payload)?;
    assert_eq!(value["ok"], json!(false), "{value}");
    assert_eq!(value["error"]["code"], json!("invalid"), "{value}");

    let raw = client
        .request_bytes(&subject, HeaderMap::new(), b"\xc1\xc1".as_slice())
        .await?;
    let refused: Reply<Echoed> = decode(Encoding::MsgPack, &raw.payload)?;
    let err = refused.into_result().err().context("garbage is refused")?;
    assert_eq!(err.code, ErrorCode::Invalid);

    // A name that breaks the naming rule is invalid too.
    let raw = client
        .request_bytes(
            &subject,
            headers_for(Encoding::Json),
            br#"{"name": "Not A Slug"}"#.as_slice(),
        )
        .await?;
    let value: serde_json::Value = serde_json::from_slice(&raw.payload)?;
    assert_eq!(value["error"]["code"], json!("invalid"), "{value}");

    // And the responder is still there.
    let echoed: Echoed = client
        .request(Command::PipelineGet, &get("after")?, Encoding::MsgPack)
        .await?;
    assert_eq!(echoed.name, "AFTER");
    Ok(())
}

#[tokio::test]
async fn no_responders_is_told_apart_at_once() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let client = server.client("caller").await?;

    let started = Instant::now();
    let err = client
        .request::<_, Echoed>(Command::PipelineGet, &get("checkout")?, Encoding::MsgPack)
        .await
        .err()
        .context("nobody serves pipeline.get")?;
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, BusError::NoResponders { subject } if subject == "phasegate.v1.pipeline.get"),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::Unavailable);
    // The server says so at once; waiting out the timeout would be a bug.
    assert!(
        elapsed < client.request_timeout() / 2,
        "no responders took {elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_service_times_out() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let silent = server.client("silent").await?;
    let _requests = silent
        .nats()
        .subscribe(silent.subjects().command(Command::PipelineGet))
        .await?;
    silent.ping().await?;

    let timeout = Duration::from_millis(200);
    let client = server
        .client_with(ConnectOptions::new("", "impatient").with_request_timeout(timeout))
        .await?;
    let err = client
        .request::<_, Echoed>(Command::PipelineGet, &get("checkout")?, Encoding::MsgPack)
        .await
        .err()
        .context("nobody answers")?;
    assert!(
        matches!(&err, BusError::TimedOut { timeout: t, .. } if *t == timeout),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::Unavailable);
    Ok(())
}

/// `Client::kv` brings an existing bucket's max age and description in
/// line with what it is opened with (retention, a lease's TTL), and keeps
/// its values; a short age shrinks the duplicate window with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_a_bucket_applies_changed_settings() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let client = server.client("kv").await?;
    let opts = |age: u64, what: &str| phasegate_bus::BucketOptions {
        description: what.to_owned(),
        max_age: Duration::from_secs(age),
        ..phasegate_bus::BucketOptions::default()
    };
    let kv = client.kv("settings", opts(3600, "one hour")).await?;
    kv.put("k", "v".into()).await?;
    assert_eq!(kv.max_age().await?, Duration::from_secs(3600));
    let kv = client.kv("settings", opts(7200, "two hours")).await?;
    assert_eq!(kv.max_age().await?, Duration::from_secs(7200));
    let kv = client.kv("settings", opts(10, "ten seconds")).await?;
    assert_eq!(kv.max_age().await?, Duration::from_secs(10));
    assert_eq!(kv.get("k").await?.map(|e| e.value), Some("v".into()));
    // Unchanged settings: nothing to do, nothing lost.
    let kv = client.kv("settings", opts(10, "ten seconds")).await?;
    assert_eq!(kv.max_age().await?, Duration::from_secs(10));
    Ok(())
}

/// nats-server 2.15 admits 1,000 consumers per stream unless the stream
/// says otherwise, and every agent's watch is one: the desired-state bucket
/// must say so, or the 1,001st agent cannot watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_admits_the_watchers_it_is_opened_for() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let client = server.client("kv").await?;
    let opts = |max_consumers| phasegate_bus::BucketOptions {
        description: "watched".to_owned(),
        max_consumers,
        ..phasegate_bus::BucketOptions::default()
    };
    let watch_many = |kv: phasegate_bus::Kv, n: usize| async move {
        let mut held = Vec::new();
        for i in 0..n {
            match kv.watch_all_with_history().await {
                Ok(w) => held.push(w),
                Err(e) => return Err(format!("watch {i}: {e}")),
            }
        }
        Ok(held.len())
    };
    let default = client
        .kv("default", phasegate_bus::BucketOptions::default())
        .await?;
    let refused = watch_many(default, 1_050).await;
    assert!(
        refused.is_err(),
        "the server's default would admit 1,050 watchers"
    );
    let roomy = client.kv("roomy", opts(1_200)).await?;
    assert_eq!(watch_many(roomy, 1_050).await, Ok(1_050));
    Ok(())
}
