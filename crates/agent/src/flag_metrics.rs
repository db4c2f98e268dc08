//! Evaluation counters per flag, by the OpenTelemetry feature-flag
//! semantic conventions: one series per flag key, version, variant and
//! reason, labelled `feature_flag_key`, `feature_flag_version`,
//! `feature_flag_result_variant`, `feature_flag_result_reason`,
//! `feature_flag_provider_name` (`phasegate`) and `feature_flag_set_id`
//! (the segment) — the conventions' attribute names as OpenTelemetry's
//! Prometheus mapping writes them (dots become underscores).
//!
//! Every evaluation of an entity the segment serves is counted, whichever
//! API asked (`/v1/check_gate`, `/v1/get_config`, OFREP), with OFREP's
//! vocabulary: the key is `gate:NAME` or `config:NAME` (one series per
//! flag however the client spelt it), the variant `on`/`off`/`v<version>`,
//! the reason `DISABLED`, `DEFAULT`, `TARGETING_MATCH` or `SPLIT`.
//! Names that are not served are not counted here (a client could make up
//! any number of them); `phasegate_agent_evaluations_total` counts those
//! by kind under `reason="unknown"`.
//!
//! The hot path takes one read lock and increments one atomic: a write
//! lock is taken only the first time a series is seen. Series stay for the
//! life of the process (a flag's versions seen since it started).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use phasegate_eval::{Answer, CompiledState};
use phasegate_proto::EntityKind;

use crate::ofrep::Variant;

/// Counts an evaluation of the served entity `name` (`state` answered
/// `answer`) in OFREP's vocabulary; the unknown-entity answer is not
/// counted here.
pub(crate) fn record(
    metrics: &FlagMetrics,
    kind: EntityKind,
    name: &str,
    state: &CompiledState,
    answer: &Answer<'_>,
) {
    if let Some(reason) = crate::ofrep::reason(state, answer) {
        metrics.count(kind, name, answer.version, Variant::of(answer), reason);
    }
}

/// One series of a flag.
#[derive(Debug)]
struct Series {
    version: u64,
    variant: Variant,
    reason: &'static str,
    count: AtomicU64,
}

/// The counters of every flag, by kind then name.
#[derive(Debug, Default)]
pub(crate) struct FlagMetrics {
    maps: [RwLock<HashMap<String, Vec<Series>>>; 2],
}

/// One series as rendered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// `gate:NAME` or `config:NAME`.
    pub(crate) key: String,
    /// The version that answered.
    pub(crate) version: u64,
    /// The variant.
    pub(crate) variant: Variant,
    /// The OpenFeature reason.
    pub(crate) reason: &'static str,
    /// Evaluations.
    pub(crate) count: u64,
}

impl FlagMetrics {
    /// Counts one evaluation of `name`.
    pub(crate) fn count(
        &self,
        kind: EntityKind,
        name: &str,
        version: u64,
        variant: Variant,
        reason: &'static str,
    ) {
        let matches =
            |s: &Series| s.version == version && s.variant == variant && s.reason == reason;
        {
            let flags = self.maps[crate::served::kind_index(kind)]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = flags
                .get(name)
                .and_then(|series| series.iter().find(|s| matches(s)))
            {
                s.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // A new series: rare, under the write lock (checked again, since
        // another request may have added it meanwhile).
        let mut flags = self.maps[crate::served::kind_index(kind)]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let series = flags.entry(name.to_owned()).or_default();
        match series.iter().find(|s| matches(s)) {
            Some(s) => {
                s.count.fetch_add(1, Ordering::Relaxed);
            }
            None => series.push(Series {
                version,
                variant,
                reason,
                count: AtomicU64::new(1),
            }),
        }
    }

    /// Every series, sorted by key, version, variant and reason.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for kind in [EntityKind::Gate, EntityKind::Config] {
            let flags = self.maps[crate::served::kind_index(kind)]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for (name, series) in flags.iter() {
                out.extend(series.iter().map(|s| Sample {
                    key: format!("{kind}:{name}"),
                    version: s.version,
                    variant: s.variant,
                    reason: s.reason,
                    count: s.count.load(Ordering::Relaxed),
                }));
            }
        }
        out.sort_by(|a, b| {
            (&a.key, a.version, a.variant.to_string(), a.reason).cmp(&(
                &b.key,
                b.version,
                b.variant.to_string(),
                b.reason,
            ))
        });
        out
    }
}

/// The metric family of [`FlagMetrics`].
pub(crate) const FAMILY: &str = "phasegate_agent_flag_evaluations_total";

impl FlagMetrics {
    /// Writes the family in the Prometheus text format; `segment` is the
    /// flag set.
    pub(crate) fn render(&self, out: &mut String, segment: &str) {
        use phasegate_telemetry::metrics::write_sample;
        out.push_str(&format!(
            "# HELP {FAMILY} evaluations of served flags, by the OpenTelemetry feature-flag conventions' attributes\n# TYPE {FAMILY} counter\n"
        ));
        for s in self.samples() {
            let labels: Vec<(String, String)> = [
                ("feature_flag_key", s.key),
                ("feature_flag_version", s.version.to_string()),
                ("feature_flag_result_variant", s.variant.to_string()),
                ("feature_flag_result_reason", s.reason.to_owned()),
                ("feature_flag_provider_name", "phasegate".to_owned()),
                ("feature_flag_set_id", segment.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            #[allow(clippy::cast_precision_loss)] // a counter read as f64 for the text format
            write_sample(out, FAMILY, &labels, s.count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_one_series_per_key_version_variant_and_reason() {
        let m = FlagMetrics::default();
        m.count(EntityKind::Gate, "g", 2, Variant::On, "SPLIT");
        m.count(EntityKind::Gate, "g", 2, Variant::On, "SPLIT");
        m.count(EntityKind::Gate, "g", 2, Variant::Off, "SPLIT");
        m.count(EntityKind::Config, "g", 7, Variant::Version(7), "DEFAULT");
        let s = m.samples();
        let rows: Vec<(String, u64, String, &str, u64)> = s
            .into_iter()
            .map(|s| (s.key, s.version, s.variant.to_string(), s.reason, s.count))
            .collect();
        assert_eq!(
            rows,
            [
                ("config:g".to_owned(), 7, "v7".to_owned(), "DEFAULT", 1),
                ("gate:g".to_owned(), 2, "off".to_owned(), "SPLIT", 1),
                ("gate:g".to_owned(), 2, "on".to_owned(), "SPLIT", 2),
            ]
        );
        let mut out = String::new();
        m.render(&mut out, "dev");
        assert!(
            out.contains("phasegate_agent_flag_evaluations_total{feature_flag_key=\"gate:g\",feature_flag_version=\"2\",feature_flag_result_variant=\"on\",feature_flag_result_reason=\"SPLIT\",feature_flag_provider_name=\"phasegate\",feature_flag_set_id=\"dev\"} 2\n"),
            "{out}"
        );
    }
}
