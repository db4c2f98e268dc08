//! What a rollout changes: two specs as pretty JSON, compared line by line.

use phasegate_proto::EntitySpec;
use serde::Serialize;

/// Above this many cells (lines before × lines after) the table of the
/// longest common subsequence is not built: the diff shows every line
/// removed, then every line added. Specs are small; this bounds a huge one.
const MAX_CELLS: usize = 4_000_000;

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Line {
    /// `same`, `added` or `removed`.
    pub(crate) op: &'static str,
    /// The line, without its newline.
    pub(crate) text: String,
}

/// A spec as the diff shows it: pretty JSON with sorted keys, without
/// `version` (the header names both versions). An absent entity (version
/// 0) is no text at all.
pub(crate) fn spec_text(spec: Option<&EntitySpec>) -> String {
    let Some(spec) = spec else {
        return String::new();
    };
    let mut value = match serde_json::to_value(spec) {
        Ok(v) => v,
        Err(e) => return format!("(cannot show: {e})"),
    };
    if let Some(map) = value.as_object_mut() {
        map.remove("version");
    }
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// The lines of `before` and `after`, each marked `same`, `removed` or
/// `added`, in the order a reader expects (removals before additions).
pub(crate) fn lines(before: &str, after: &str) -> Vec<Line> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);

    let mut out: Vec<Line> = a[..prefix].iter().map(|t| line("same", t)).collect();
    out.extend(middle(mid_a, mid_b));
    out.extend(a[a.len() - suffix..].iter().map(|t| line("same", t)));
    out
}

fn line(op: &'static str, text: &str) -> Line {
    Line {
        op,
        text: text.to_owned(),
    }
}

/// The differing middle, by longest common subsequence.
fn middle(a: &[&str], b: &[&str]) -> Vec<Line> {
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        let mut out: Vec<Line> = a.iter().map(|t| line("removed", t)).collect();
        out.extend(b.iter().map(|t| line("added", t)));
        return out;
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let width = b.len() + 1;
    let mut lcs = vec![0u32; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * width + j] = if a[i] == b[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len() + b.len());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(line("same", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len()
            && (j == b.len() || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])
        {
            out.push(line("removed", a[i]));
            i += 1;
        } else {
            out.push(line("added", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(d: &[Line]) -> Vec<String> {
        d.iter()
            .map(|l| {
                let mark = match l.op {
                    "same" => ' ',
                    "added" => '+',
                    _ => '-',
                };
                format!("{mark}{}", l.text)
            })
            .collect()
    }

    #[test]
    fn marks_what_changed_and_keeps_the_rest() {
        let d = lines("a\nb\nc\nd", "a\nx\nc\nd\ne");
        assert_eq!(show(&d), vec![" a", "-b", "+x", " c", " d", "+e"]);
    }

    #[test]
    fn an_absent_side_is_all_added_or_all_removed() {
        assert_eq!(show(&lines("", "a\nb")), vec!["+a", "+b"]);
        assert_eq!(show(&lines("a\nb", "")), vec!["-a", "-b"]);
        assert!(
            lines("same\ntext", "same\ntext")
                .iter()
                .all(|l| l.op == "same")
        );
    }

    #[test]
    fn spec_text_leaves_out_the_version() {
        let mut spec = EntitySpec::new(
            phasegate_proto::EntityKind::Gate,
            phasegate_proto::EntityName::new("g").unwrap(),
        );
        spec.version = 7;
        let text = spec_text(Some(&spec));
        assert!(!text.contains("version"), "{text}");
        assert!(text.contains("\"name\": \"g\""), "{text}");
        assert_eq!(spec_text(None), "");
    }
}
