//! The raw-NATS floor of propagation: a JetStream KV put watched by N
//! watchers, each on its own connection, that write and fsync a small file
//! and then ack on core NATS. What phasegate adds on top of this is its
//! own cost.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::StreamExt as _;
use phasegate_bus::{BucketOptions, ConnectOptions};
use phasegate_devkit::NatsServer;
use phasegate_tests::NatsServerExt as _;
use tokio::time::Instant;

const BUCKET: &str = "bench_baseline";
const KEY: &str = "k";
const ACKS: &str = "bench.baseline.ack";

/// How long one sample may take before the run is called broken.
const SAMPLE_PATIENCE: Duration = Duration::from_secs(60);

/// `samples` puts, each timed until all `n` watchers acked it.
pub(crate) async fn run(
    nats: &NatsServer,
    n: usize,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::Builder::new()
        .prefix("phasegate-baseline-")
        .tempdir()?;
    let me = nats.client("bench-baseline").await?;
    let kv = me.kv(BUCKET, BucketOptions::default()).await?;
    kv.put(KEY, Bytes::from_static(b"0")).await?;
    let mut acks = me.subscribe_payloads(ACKS.to_owned()).await?;
    me.ping().await?;
    let mut watchers = tokio::task::JoinSet::new();
    for i in 0..n {
        let client =
            phasegate_bus::connect(ConnectOptions::new(nats.url(), format!("watcher-{i}"))).await?;
        let file = dir.path().join(format!("watcher-{i}"));
        watchers.spawn(watch(client, file));
    }
    // Each watcher acks the value it finds first: all of them are ready.
    collect(&mut acks, b"0", n)
        .await
        .context("watchers ready")?;
    let mut out = Vec::with_capacity(samples);
    for s in 1..=samples {
        let value = s.to_string();
        let t0 = Instant::now();
        kv.put(KEY, Bytes::from(value.clone())).await?;
        collect(&mut acks, value.as_bytes(), n).await?;
        out.push(t0.elapsed());
    }
    watchers.shutdown().await;
    Ok(out)
}

/// Waits for `n` acks carrying `value`.
async fn collect(
    acks: &mut (impl futures_util::Stream<Item = (String, Bytes)> + Unpin),
    value: &[u8],
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SAMPLE_PATIENCE;
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout_at(deadline, acks.next()).await {
            Ok(Some((_, v))) if v.as_ref() == value => seen += 1,
            Ok(Some(_)) => {}
            Ok(None) => bail!("the ack subscription ended"),
            Err(_) => bail!("{seen} of {n} watchers acked within {SAMPLE_PATIENCE:?}"),
        }
    }
    Ok(())
}

/// One watcher: every value seen is written and fsynced to `file`, then
/// acked with the value itself.
async fn watch(client: phasegate_bus::Client, file: PathBuf) -> anyhow::Result<()> {
    let kv = client.kv_existing(BUCKET).await?;
    let mut changes = kv.watch_all_with_history().await?;
    while let Some(change) = changes.next().await {
        let Some(value) = change?.value else { continue };
        let (path, body) = (file.clone(), value.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(path)?;
            f.write_all(&body)?;
            f.sync_all()
        })
        .await??;
        client.publish(ACKS.to_owned(), value).await?;
        client.flush().await;
    }
    Ok(())
}
