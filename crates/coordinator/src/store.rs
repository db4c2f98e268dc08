//! Durable state in JetStream key-value buckets, typed with the codec.
//!
//! Every write that an `ok` reply stands on is revision-checked: the
//! caller passes the revision it last read and gets the new one, so two
//! writers can never silently overwrite each other.

use std::time::Duration;

use bytes::Bytes;
use phasegate_bus::{BucketOptions, BusError, Client, Kv};
use phasegate_proto::{Bucket, Encoding, Subjects, decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CoordinatorError;

/// The coordinator's buckets.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(crate) pipelines: Kv,
    pub(crate) entities: Kv,
    pub(crate) triggers: Kv,
    pub(crate) desired: Kv,
    pub(crate) agents: Kv,
    /// Checked before every write: a coordinator that may have lost its
    /// lease writes nothing.
    pub(crate) lease: crate::leader::Lease,
}

/// A decoded value with the revision that wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Versioned<T> {
    pub(crate) key: String,
    pub(crate) value: T,
    pub(crate) revision: u64,
}

impl Store {
    /// Opens (creating when needed) every bucket under `subjects`' prefix
    /// with `replicas` copies; finished triggers expire after
    /// `trigger_retention`. Both are applied to an existing bucket when
    /// they changed.
    pub(crate) async fn open(
        client: &Client,
        subjects: &Subjects,
        lease: crate::leader::Lease,
        trigger_retention: Duration,
        max_agents: usize,
        replicas: usize,
    ) -> Result<Self, CoordinatorError> {
        let open_aged = |what: Bucket, description: &str, max_age: Duration| {
            let name = subjects.bucket(what);
            let opts = BucketOptions {
                description: description.to_owned(),
                max_age,
                replicas,
                ..BucketOptions::default()
            };
            async move { client.kv(&name, opts).await }
        };
        let open = |what: Bucket, description: &str| open_aged(what, description, Duration::ZERO);
        Ok(Self {
            pipelines: open(Bucket::Pipelines, "phasegate pipelines").await?,
            entities: open(
                Bucket::Entities,
                "phasegate gates and configs with their active trigger",
            )
            .await?,
            triggers: open_aged(
                Bucket::Triggers,
                "phasegate finished triggers",
                trigger_retention,
            )
            .await?,
            // Every agent watches it: room for each, and for a reconnecting
            // one whose old watch has not lapsed yet (the server's default
            // of 1,000 consumers per stream is the design size itself).
            desired: client
                .kv(
                    &subjects.bucket(Bucket::Desired),
                    BucketOptions {
                        description: "phasegate desired state, watched by agents".to_owned(),
                        max_consumers: i32::try_from(
                            max_agents.saturating_mul(2).saturating_add(64),
                        )
                        .unwrap_or(i32::MAX),
                        replicas,
                        ..BucketOptions::default()
                    },
                )
                .await?,
            agents: open(Bucket::Agents, "phasegate agents ever heard from").await?,
            lease,
        })
    }
}

impl Store {
    /// Writes to `kv`, each only while this instance leads.
    pub(crate) fn write<'a>(&'a self, kv: &'a Kv) -> Fenced<'a> {
        Fenced {
            kv,
            lease: &self.lease,
        }
    }
}

/// Writes that check the leadership lease first: a coordinator that may
/// have lost it writes nothing (see [`crate::leader`]).
pub(crate) struct Fenced<'a> {
    kv: &'a Kv,
    lease: &'a crate::leader::Lease,
}

impl Fenced<'_> {
    /// A revision-checked write (`revision` 0: the key must have no value).
    pub(crate) async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, CoordinatorError> {
        self.lease.check()?;
        Ok(self.kv.update(key, value, revision).await?)
    }

    /// An unconditional write, for keys no one else writes.
    pub(crate) async fn put(&self, key: &str, value: Bytes) -> Result<u64, CoordinatorError> {
        self.lease.check()?;
        Ok(self.kv.put(key, value).await?)
    }

    /// An unconditional delete, for keys no one else writes.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), CoordinatorError> {
        self.lease.check()?;
        Ok(self.kv.delete(key).await?)
    }
}

/// Copies a finished trigger to the finished-triggers bucket, where it is
/// read by id. Idempotent: the record under an id never changes once the
/// trigger finished.
pub(crate) async fn archive(
    store: &Store,
    rec: &phasegate_proto::TriggerRecord,
) -> Result<(), CoordinatorError> {
    store
        .write(&store.triggers)
        .put(rec.trigger.id.as_str(), to_bytes(rec)?)
        .await?;
    Ok(())
}

/// Finishes what a finish's commit point started: archives the trigger an
/// entity record holds as `finished`, then clears it from the record with
/// a revision-checked write, so the record never keeps a finished trigger
/// past its archive (nor past its retention). Idempotent: after a stop
/// anywhere in between, running it again completes it.
pub(crate) async fn archive_finished(
    store: &Store,
    key: &str,
    stored: &mut phasegate_proto::StoredEntity,
    revision: &mut u64,
) -> Result<(), CoordinatorError> {
    let Some(rec) = &stored.finished else {
        return Ok(());
    };
    archive(store, rec).await?;
    let mut next = stored.clone();
    next.finished = None;
    *revision = store
        .write(&store.entities)
        .update(key, to_bytes(&next)?, *revision)
        .await?;
    *stored = next;
    Ok(())
}

/// Encodes a stored value (always MessagePack maps).
pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Result<Bytes, CoordinatorError> {
    Ok(Bytes::from(encode(Encoding::MsgPack, value)?))
}

/// Reads every value of `kv`, skipping (and logging) any that does not
/// decode rather than refusing to start.
pub(crate) async fn load_all<T: DeserializeOwned>(kv: &Kv) -> Result<Vec<Versioned<T>>, BusError> {
    let mut out = Vec::new();
    for e in kv.entries().await? {
        match decode::<T>(Encoding::MsgPack, &e.value) {
            Ok(value) => out.push(Versioned {
                key: e.key,
                value,
                revision: e.revision,
            }),
            Err(err) => {
                tracing::error!(bucket = kv.bucket(), key = %e.key, error = %err, "undecodable value skipped");
            }
        }
    }
    Ok(out)
}
