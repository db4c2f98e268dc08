//! "At most one coordinator acts at any time", checked on the JSON logs of
//! both coordinators. A coordinator logs a history step (span
//! `phasegate.step`) or `action applied` only after it committed it, and
//! `leading` when it takes the lease. Two checks:
//!
//! - the same step (trigger, type, phase) committed by two instances;
//! - an instance committing anything strictly between another instance's
//!   `leading` line and a later commit of that other instance in the same
//!   term: then both acted over one stretch of time.
//!
//! Which instance wrote a line is known from the log file (one per
//! process). When a line also carries an instance field, it must agree;
//! when it carries none (the coordinator does not log it today) the check
//! is the file's and the figures count the lines without it.

use std::collections::BTreeMap;

use serde_json::Value;

/// One relevant log line.
#[derive(Debug, Clone)]
pub struct Line {
    /// Wall-clock time, Unix ms.
    pub at_ms: u64,
    /// The instance whose log file holds it.
    pub instance: String,
    /// What it says.
    pub what: What,
}

/// The lines that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// The instance took the lease.
    Leading,
    /// A committed step or action: (trigger, message, phase).
    Act(String, String, String),
}

/// Result of reading the logs.
#[derive(Debug, Default)]
pub struct LogCheck {
    /// Violations, each with the time it was seen (to find its seed).
    pub violations: Vec<(u64, String)>,
    /// Action lines read.
    pub actions: u64,
    /// Action lines without any instance field.
    pub without_instance: u64,
}

/// Parses the log of `instance` (JSON lines; other lines are skipped).
pub fn parse(instance: &str, text: &str, check: &mut LogCheck) -> Vec<Line> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            continue;
        };
        let Some(logged_ms) = v["timestamp"].as_str().and_then(rfc3339_ms) else {
            continue;
        };
        // A step is judged at the instant its history entry records (when
        // the coordinator decided and wrote it), not when the log line was
        // printed: a process frozen between its write and the answer prints
        // late a step that was stored in its own term.
        let at_ms = v["fields"]["at_ms"].as_u64().unwrap_or(logged_ms);
        let msg = v["fields"]["message"].as_str().unwrap_or("");
        let span = &v["span"];
        let what = if msg.starts_with("leading") {
            What::Leading
        } else if span["name"] == "phasegate.step" || msg == "action applied" {
            check.actions += 1;
            match instance_field(&v) {
                None => check.without_instance += 1,
                Some(found) if found != instance => check.violations.push((
                    at_ms,
                    format!(
                        "[instance field disagrees with the process] log of {instance} says {found}: {raw}"
                    ),
                )),
                Some(_) => {}
            }
            let s = |k: &str| span[k].as_str().unwrap_or("").to_owned();
            What::Act(
                s("phasegate.trigger_id"),
                format!("{}{}", msg, s("phasegate.action")),
                s("phasegate.phase_id"),
            )
        } else {
            continue;
        };
        out.push(Line {
            at_ms,
            instance: instance.to_owned(),
            what,
        });
    }
    out
}

/// An instance id carried by the line, wherever a field named like one is.
fn instance_field(v: &Value) -> Option<String> {
    for obj in [&v["fields"], &v["span"], v] {
        if let Some(map) = obj.as_object() {
            for (k, x) in map {
                if (k == "instance" || k == "instance_id" || k.ends_with(".instance_id"))
                    && let Some(s) = x.as_str()
                {
                    return Some(s.to_owned());
                }
            }
        }
    }
    None
}

/// Runs both checks over the lines of every instance.
pub fn check(lines: &[Line], out: &mut LogCheck) {
    // 1. The same step committed by two instances.
    let mut by_step: BTreeMap<(&str, &str, &str), Vec<&Line>> = BTreeMap::new();
    for l in lines {
        if let What::Act(t, m, p) = &l.what
            && matches!(
                m.as_str(),
                "phase_started" | "phase_applied" | "completed" | "aborted" | "skipped"
            )
        {
            by_step.entry((t, m, p)).or_default().push(l);
        }
    }
    for ((t, m, p), ls) in &by_step {
        let mut instances: Vec<&str> = ls.iter().map(|l| l.instance.as_str()).collect();
        instances.sort_unstable();
        instances.dedup();
        if instances.len() > 1 {
            out.violations.push((
                ls[0].at_ms,
                format!(
                    "[two coordinators committed the same step] trigger {t}: {m} of phase {p} by {instances:?} at {:?}",
                    ls.iter().map(|l| (l.instance.as_str(), l.at_ms)).collect::<Vec<_>>()
                ),
            ));
        }
    }
    // 2. Terms: from a `leading` line to the next one of the same instance.
    let mut terms: Vec<(String, u64, u64)> = Vec::new(); // instance, leading at, last act
    let mut instances: Vec<&str> = lines.iter().map(|l| l.instance.as_str()).collect();
    instances.sort_unstable();
    instances.dedup();
    for inst in &instances {
        let mut current: Option<(u64, u64)> = None;
        for l in lines.iter().filter(|l| l.instance == *inst) {
            match l.what {
                What::Leading => {
                    if let Some((s, e)) = current.take() {
                        terms.push(((*inst).to_owned(), s, e));
                    }
                    current = Some((l.at_ms, l.at_ms));
                }
                What::Act(..) => {
                    if let Some((_, e)) = current.as_mut() {
                        *e = (*e).max(l.at_ms);
                    }
                }
            }
        }
        if let Some((s, e)) = current {
            terms.push(((*inst).to_owned(), s, e));
        }
    }
    for l in lines {
        if !matches!(l.what, What::Act(..)) {
            continue;
        }
        if let Some((other, s, e)) = terms
            .iter()
            .find(|(i, s, e)| *i != l.instance && *s < l.at_ms && l.at_ms < *e)
        {
            out.violations.push((
                l.at_ms,
                format!(
                    "[two coordinators acting at once] {} committed {:?} at {} while {other} led \
                     (leading at {s}, committed again at {e})",
                    l.instance, l.what, l.at_ms
                ),
            ));
        }
    }
}

/// `2025-06-01T12:34:56.123456Z` (or without fraction) → Unix ms.
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut ms = 0;
    if b.get(19) == Some(&b'.') {
        let frac: String = s[20..].chars().take_while(char::is_ascii_digit).collect();
        let f3: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = f3.parse::<i64>().ok()?;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            rfc3339_ms("2024-03-01T00:00:00.000123Z"),
            Some(1_709_251_200_000)
        );
    }

    fn act(i: &str, at: u64) -> Line {
        // One step per instance, so only the overlap of terms is judged.
        Line {
            at_ms: at,
            instance: i.into(),
            what: What::Act("t".into(), "phase_started".into(), format!("p-{i}")),
        }
    }

    #[test]
    fn overlapping_terms_are_found() {
        let lead = |i: &str, at| Line {
            at_ms: at,
            instance: i.into(),
            what: What::Leading,
        };
        let mut ok = LogCheck::default();
        check(
            &[lead("c0", 1), act("c0", 2), lead("c1", 10), act("c1", 11)],
            &mut ok,
        );
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);
        let mut bad = LogCheck::default();
        check(
            &[lead("c0", 1), act("c0", 20), lead("c1", 10), act("c1", 11)],
            &mut bad,
        );
        assert!(!bad.violations.is_empty());
    }
}
