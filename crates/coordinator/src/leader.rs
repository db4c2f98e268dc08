//! One coordinator per installation: a lease in a key-value bucket whose
//! values expire `lease` after they were written. The holder renews it
//! every third of the lease; another instance waits (serving nothing, so
//! clients get `unavailable` and retry) until the lease lapses. A process
//! restarted under the same instance id takes its own lease back at once.
//!
//! Three rules keep a deposed leader harmless (a frozen process that wakes
//! up after a standby took over):
//! - it stops acting before its lease can have expired: validity is
//!   counted from when a renewal was *sent*, less a margin, never from when
//!   it was answered, and every write checks it first ([`Lease::check`]);
//! - it never releases a lease it no longer holds: the release is a delete
//!   conditional on the revision of its own last renewal;
//! - its late writes cannot overwrite its successor's: every write to the
//!   entity and desired-state buckets is revision-checked, so a write
//!   based on what it read before the successor wrote fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use phasegate_bus::{BucketOptions, BusError, Client, Kv};
use phasegate_proto::{Bucket, Subjects};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::CoordinatorError;

const KEY: &str = "leader";

/// The part of the lease before its expiry at which the holder stops
/// acting: a tenth, so clocks that run slightly apart cannot overlap.
const MARGIN_DIVISOR: u32 = 10;

/// A held lease, shared by everything that writes.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kv: Kv,
    instance: String,
    duration: Duration,
    /// Revision of our last successful write of the lease.
    revision: AtomicU64,
    /// Until when we may act: milliseconds after `epoch`.
    valid_until_ms: AtomicU64,
    epoch: Instant,
    /// Set once the lease is lost for good.
    lost: AtomicBool,
}

impl Lease {
    fn new(kv: Kv, instance: String, duration: Duration, revision: u64, sent: Instant) -> Self {
        let lease = Self {
            inner: Arc::new(Inner {
                kv,
                instance,
                duration,
                revision: AtomicU64::new(revision),
                valid_until_ms: AtomicU64::new(0),
                epoch: sent,
                lost: AtomicBool::new(false),
            }),
        };
        lease.renewed(revision, sent);
        lease
    }

    fn renewed(&self, revision: u64, sent: Instant) {
        let i = &self.inner;
        let margin = i.duration / MARGIN_DIVISOR;
        let until = sent.saturating_duration_since(i.epoch) + i.duration - margin;
        i.revision.store(revision, Ordering::SeqCst);
        i.valid_until_ms.store(
            u64::try_from(until.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    fn valid_until(&self) -> Instant {
        self.inner.epoch + Duration::from_millis(self.inner.valid_until_ms.load(Ordering::SeqCst))
    }

    /// This coordinator's instance id, as in the lease.
    pub(crate) fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// True while this instance may act: the lease is held and cannot have
    /// expired yet.
    pub(crate) fn holds(&self) -> bool {
        !self.inner.lost.load(Ordering::SeqCst) && Instant::now() < self.valid_until()
    }

    /// `Err` when this instance may no longer act; every write checks it.
    pub(crate) fn check(&self) -> Result<(), CoordinatorError> {
        if self.holds() {
            Ok(())
        } else {
            Err(CoordinatorError::NotLeader)
        }
    }

    /// Gives the lease up, for a clean stop: only if it is still ours
    /// (bounded: NATS may be gone). A lease lost to another instance is
    /// never touched.
    pub(crate) async fn release(&self) -> Result<(), BusError> {
        if self.inner.lost.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let rev = self.inner.revision.load(Ordering::SeqCst);
        match tokio::time::timeout(Duration::from_secs(2), self.inner.kv.delete_if(KEY, rev)).await
        {
            Ok(Err(BusError::KvConflict { .. })) | Err(_) => Ok(()),
            Ok(r) => r,
        }
    }
}

/// The leadership bucket, created when missing. Its values expire after
/// `lease`; a bucket made with another lease is changed to this one, so a
/// new `leader_lease_ms` takes effect at start.
async fn bucket(
    client: &Client,
    subjects: &Subjects,
    lease: Duration,
    replicas: usize,
) -> Result<Kv, CoordinatorError> {
    Ok(client
        .kv(
            &subjects.bucket(Bucket::Leader),
            BucketOptions {
                description: "phasegate coordinator leadership lease".to_owned(),
                max_age: lease,
                replicas,
                ..BucketOptions::default()
            },
        )
        .await?)
}

/// Waits until this instance holds the lease; the lease's bucket is kept
/// in `replicas` copies, like every other.
pub(crate) async fn acquire(
    client: &Client,
    subjects: &Subjects,
    instance: &str,
    lease: Duration,
    replicas: usize,
) -> Result<Lease, CoordinatorError> {
    let kv = bucket(client, subjects, lease, replicas).await?;
    let mut announced = false;
    loop {
        let sent = Instant::now();
        match kv.create(KEY, Bytes::from(instance.to_owned())).await {
            Ok(rev) => {
                tracing::info!(instance, "leading");
                return Ok(Lease::new(kv, instance.to_owned(), lease, rev, sent));
            }
            Err(BusError::KvConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(e) = kv.get(KEY).await? {
            if e.value.as_ref() == instance.as_bytes() {
                // Our own lease, from before a restart: take it back.
                let sent = Instant::now();
                match kv
                    .update(KEY, Bytes::from(instance.to_owned()), e.revision)
                    .await
                {
                    Ok(rev) => {
                        tracing::info!(instance, "leading again after a restart");
                        return Ok(Lease::new(kv, instance.to_owned(), lease, rev, sent));
                    }
                    // It lapsed or moved meanwhile: look again.
                    Err(BusError::KvConflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
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

/// Renews the lease every third of it until it cannot; then reports why on
/// `lost`. A renewal that does not succeed before the lease stops being
/// valid ends the leadership, as does any sign that another instance holds
/// it.
pub(crate) fn keep(
    lease: Lease,
    lost: Arc<watch::Sender<Option<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let i = &lease.inner;
        let mut next = Instant::now() + i.duration / 3;
        let reason = loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = tokio::time::sleep_until(lease.valid_until()) => {}
            }
            if i.lost.load(Ordering::SeqCst) {
                // Released for a clean stop.
                return;
            }
            if Instant::now() >= lease.valid_until() {
                break format!(
                    "could not renew the leadership lease in time ({:?})",
                    i.duration
                );
            }
            let sent = Instant::now();
            let rev = i.revision.load(Ordering::SeqCst);
            let write = i.kv.update(KEY, Bytes::from(i.instance.clone()), rev);
            match tokio::time::timeout_at(lease.valid_until(), write).await {
                Ok(Ok(r)) => {
                    lease.renewed(r, sent);
                    next = sent + i.duration / 3;
                }
                Ok(Err(BusError::KvConflict { .. })) => {
                    break "lost the leadership lease to another coordinator".to_owned();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot renew the leadership lease; retrying");
                    next = Instant::now() + i.duration / 20;
                }
                Err(_) => {
                    tracing::warn!("renewing the leadership lease timed out");
                    next = Instant::now();
                }
            }
        };
        // Whatever happens next, this instance no longer acts or releases.
        i.lost.store(true, Ordering::SeqCst);
        tracing::error!(instance = %i.instance, reason = %reason, "leadership lost; stopping");
        let _ = lost.send(Some(reason));
    })
}
