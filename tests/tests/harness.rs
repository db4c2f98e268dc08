//! The harness itself: servers on distinct ports, gone when dropped, and a
//! restart that keeps the port and the JetStream store, so that clients
//! reconnect and find their data.

use std::path::Path;

use anyhow::{Context as _, ensure};
use futures_util::StreamExt as _;
use phasegate_bus::async_nats::jetstream::kv;
use phasegate_bus::{Command, Encoding, encoding_of, reply};
use phasegate_proto::{PipelineGetRequest, PipelineName, Reply, decode};
use phasegate_tests::NatsServerExt as _;
use phasegate_tests::{NatsServer, PATIENCE, wait_for, wait_until};

#[tokio::test]
async fn servers_get_their_own_port_and_die_with_their_handle() -> anyhow::Result<()> {
    let a = NatsServer::start().await?;
    let b = NatsServer::start().await?;
    ensure!(a.port() != b.port(), "both on {}", a.port());
    ensure!(a.url() == format!("nats://127.0.0.1:{}", a.port()));

    let pid = a.pid().context("a runs")?;
    let proc = format!("/proc/{pid}");
    ensure!(Path::new(&proc).exists());
    drop(a);
    // Killed and reaped by drop: no zombie is left either.
    ensure!(
        !Path::new(&proc).exists(),
        "nats-server {pid} outlived its handle"
    );
    Ok(())
}

#[tokio::test]
async fn restart_keeps_port_and_store_and_clients_reconnect() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let url = server.url();
    let client = server.client("survivor").await?;

    let js = client.jetstream();
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "harness".into(),
            ..Default::default()
        })
        .await?;
    bucket.put("greeting", "hello".into()).await?;

    server.kill()?;
    wait_until(
        "the client notices the server is gone",
        PATIENCE,
        || async { !client.is_connected() },
    )
    .await?;

    server.restart().await?;
    assert_eq!(server.url(), url, "restart keeps the port");

    // The old client reconnects by itself and reads what it wrote before.
    let value = wait_for(
        "the key written before the restart is read back",
        PATIENCE,
        || async {
            match bucket.get("greeting").await {
                Ok(Some(value)) => Ok(value),
                Ok(None) => Err("the key is absent".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    assert_eq!(value.as_ref(), b"hello");
    ensure!(client.is_connected());

    // And its requests reach a service that started after the restart.
    let service = server.client("service").await?;
    let mut requests = service
        .nats()
        .subscribe(service.subjects().command(Command::PipelineGet))
        .await?;
    // A round trip, not a flush: the subscription is on the server after it.
    service.ping().await?;
    let serving = service.clone();
    tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let encoding = encoding_of(&message);
            let answer = match decode::<PipelineGetRequest>(encoding, &message.payload) {
                Ok(req) => Reply::ok(req.name.as_str().to_owned()),
                Err(e) => Reply::err(phasegate_proto::ApiError::invalid(e.to_string())),
            };
            let _ = reply(&serving, &message, &answer, encoding).await;
        }
    });
    let request = PipelineGetRequest {
        name: PipelineName::new("back")?,
    };
    let name: String = client
        .request(Command::PipelineGet, &request, Encoding::MsgPack)
        .await?;
    assert_eq!(name, "back");
    Ok(())
}
