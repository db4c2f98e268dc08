//! A small registry rendered in the Prometheus text format: counters,
//! gauges and histograms with labels. Meant for the cold paths of the
//! coordinator and agent (a mutex per update); hot paths keep their own
//! atomics and render them with [`write_sample`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Kinds of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
struct Hist {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Family {
    help: &'static str,
    kind: Option<Kind>,
    values: BTreeMap<Labels, f64>,
    hists: BTreeMap<Labels, Hist>,
}

/// Upper bounds of histogram buckets, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A set of metric families.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Registry {
    fn with<R>(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        f: impl FnOnce(&mut Family) -> R,
    ) -> Option<R> {
        let mut fams = self.families.lock().ok()?;
        let fam = fams.entry(name).or_default();
        fam.help = help;
        fam.kind = Some(kind);
        Some(f(fam))
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], by: f64) {
        self.with(name, help, Kind::Counter, |f| {
            *f.values.entry(labels(l)).or_default() += by
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], value: f64) {
        self.with(name, help, Kind::Gauge, |f| {
            f.values.insert(labels(l), value);
        });
    }

    /// Replaces every series of a gauge at once (series not given vanish).
    pub fn set_all(
        &self,
        name: &'static str,
        help: &'static str,
        series: Vec<(Vec<(&str, &str)>, f64)>,
    ) {
        self.with(name, help, Kind::Gauge, |f| {
            f.values = series.into_iter().map(|(l, v)| (labels(&l), v)).collect();
        });
    }

    /// Records an observation, in seconds.
    pub fn observe(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], value: f64) {
        self.with(name, help, Kind::Histogram, |f| {
            let h = f.hists.entry(labels(l)).or_insert_with(|| Hist {
                buckets: vec![0; BUCKETS.len()],
                ..Hist::default()
            });
            for (i, b) in BUCKETS.iter().enumerate() {
                if value <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.sum += value;
            h.count += 1;
        });
    }

    /// The Prometheus text of every family.
    pub fn render(&self, out: &mut String) {
        let Ok(fams) = self.families.lock() else {
            return;
        };
        for (name, f) in fams.iter() {
            let kind = f.kind.unwrap_or(Kind::Gauge);
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            for (l, v) in &f.values {
                write_sample(out, name, l, *v);
            }
            for (l, h) in &f.hists {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let mut with_le = l.clone();
                    with_le.push(("le".to_owned(), b.to_string()));
                    write_sample(
                        out,
                        &format!("{name}_bucket"),
                        &with_le,
                        h.buckets[i] as f64,
                    );
                }
                let mut inf = l.clone();
                inf.push(("le".to_owned(), "+Inf".to_owned()));
                write_sample(out, &format!("{name}_bucket"), &inf, h.count as f64);
                write_sample(out, &format!("{name}_sum"), l, h.sum);
                write_sample(out, &format!("{name}_count"), l, h.count as f64);
            }
        }
    }
}

/// Writes `phasegate_build_info{version, component} 1`, Prometheus's
/// info-metric idiom: which build of which program answers, to join on.
pub fn write_build_info(out: &mut String, component: &str) {
    out.push_str("# HELP phasegate_build_info the phasegate build that answers (always 1)\n# TYPE phasegate_build_info gauge\n");
    write_sample(
        out,
        "phasegate_build_info",
        &[
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ("component".to_owned(), component.to_owned()),
        ],
        1.0,
    );
}

/// Writes one sample line, escaping label values.
pub fn write_sample(out: &mut String, name: &str, l: &[(String, String)], value: f64) {
    out.push_str(name);
    if !l.is_empty() {
        out.push('{');
        for (i, (k, v)) in l.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        r.inc("x_total", "things", &[("kind", "a\"b")], 2.0);
        r.set("up", "is up", &[], 1.0);
        r.observe("lat_seconds", "latency", &[("p", "dev")], 0.02);
        let mut s = String::new();
        r.render(&mut s);
        assert!(
            s.contains("# TYPE x_total counter\nx_total{kind=\"a\\\"b\"} 2\n"),
            "{s}"
        );
        assert!(s.contains("up 1\n"));
        assert!(
            s.contains("lat_seconds_bucket{p=\"dev\",le=\"0.025\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("lat_seconds_bucket{p=\"dev\",le=\"0.01\"} 0\n"));
        assert!(s.contains("lat_seconds_count{p=\"dev\"} 1\n"));
    }
}
