//! One coordinator per installation: a lease in a key-value bucket whose
//! values expire `lease` after they were written. The holder renews it
//! every third of the lease; another instance waits (serving nothing, so
//! clients get `unavailable` and retry) until the lease lapses. A process
//! restarted under the same instance id takes its own lease back at once.
//! A holder that cannot renew in time stops, since someone else may lead.

use std::time::Duration;

use bytes::Bytes;
use phasegate_bus::{BucketOptions, BusError, Client, Kv};
use phasegate_proto::{Bucket, Subjects};
use tokio::sync::watch;

use crate::error::CoordinatorError;

const KEY: &str = "leader";

/// Waits until this instance holds the lease; returns the bucket and the
/// revision of our lease.
pub(crate) async fn acquire(
    client: &Client,
    subjects: &Subjects,
    instance: &str,
    lease: Duration,
) -> Result<(Kv, u64), CoordinatorError> {
    let kv = client
        .kv(
            &subjects.bucket(Bucket::Leader),
            BucketOptions {
                description: "phasegate coordinator leadership lease".to_owned(),
                max_age: lease,
                ..BucketOptions::default()
            },
        )
        .await?;
    let mut announced = false;
    loop {
        match kv.create(KEY, Bytes::from(instance.to_owned())).await {
            Ok(rev) => {
                tracing::info!(instance, "leading");
                return Ok((kv, rev));
            }
            Err(BusError::KvConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(e) = kv.get(KEY).await? {
            if e.value.as_ref() == instance.as_bytes() {
                // Our own lease, from before a restart: take it back.
                let rev = kv
                    .update(KEY, Bytes::from(instance.to_owned()), e.revision)
                    .await?;
                tracing::info!(instance, "leading again after a restart");
                return Ok((kv, rev));
            }
            if !announced {
                tracing::warn!(
                    instance,
                    leader = %String::from_utf8_lossy(&e.value),
                    "another coordinator leads; standing by until its lease lapses"
                );
                announced = true;
            }
        }
        tokio::time::sleep(lease / 4).await;
    }
}

/// Renews the lease until it cannot; then reports why on `lost`.
pub(crate) fn keep(
    kv: Kv,
    instance: String,
    mut rev: u64,
    lease: Duration,
    lost: std::sync::Arc<watch::Sender<Option<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(lease / 3).await;
            match kv.update(KEY, Bytes::from(instance.clone()), rev).await {
                Ok(r) => {
                    rev = r;
                    last_ok = tokio::time::Instant::now();
                }
                Err(BusError::KvConflict { .. }) => {
                    let _ = lost.send(Some(
                        "lost the leadership lease to another coordinator".to_owned(),
                    ));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leadership lease");
                    if last_ok.elapsed() >= lease {
                        let _ = lost.send(Some(format!(
                            "could not renew the leadership lease for {lease:?}"
                        )));
                        return;
                    }
                }
            }
        }
    })
}

/// Gives the lease up, for a clean stop (bounded: NATS may be gone).
pub(crate) async fn release(kv: &Kv) -> Result<(), BusError> {
    match tokio::time::timeout(Duration::from_secs(2), kv.delete(KEY)).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}
