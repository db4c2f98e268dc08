//! Printing results: aligned tables for people, JSON for programs.
//!
//! Much of what is printed came from the network and was written by
//! someone else: actors, comments, descriptions, tiers, errors of blocked
//! entities, error messages of the server. None of it may reach the
//! terminal as control characters (an escape sequence can clear the
//! screen, rewrite earlier lines, set the window title, or hide text), so
//! every table cell and every line for people goes through [`sanitize`]:
//! the cells in [`Table::row`], the lines in [`say!`] (and the history
//! lines the renderers build). JSON goes through
//! [`json`], which escapes what serde leaves raw.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;

use crate::Format;

/// Prints one line for people, [`sanitize`]d: `say!("{} stored", name)`.
/// Use it, not `println!`, for anything that may hold remote text.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::output::sanitize(&format!($($arg)*)))
    };
}
pub(crate) use say;

/// Characters that must not reach a terminal: C0 controls (escape, bell,
/// carriage return, newline, tab …), DEL, C1 controls (U+0080–U+009F: some
/// terminals read U+009B as CSI), and the bidirectional overrides and
/// isolates that make text display in another order than it reads.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` for a terminal: each character of [`unsafe_char`] replaced by a
/// visible escape (`\x1b` for ESC, `\u{9b}` for CSI, `\u{202e}` …), so
/// one cell stays one line and nothing is hidden. Borrows when nothing
/// needs replacing.
pub(crate) fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

/// `value` as JSON (pretty when asked), safe for a terminal too: serde
/// escapes C0 controls but writes DEL, C1 controls and bidirectional
/// overrides raw; those are written as `\uXXXX`, which JSON reads back as
/// the same character. They can only occur inside strings (JSON's own
/// syntax is ASCII), so the document means exactly what it did.
pub(crate) fn json<T: Serialize>(value: &T, pretty: bool) -> anyhow::Result<String> {
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    // serde escapes every C0 control inside strings: a raw newline is the
    // pretty printer's own, between tokens.
    let raw = |c: char| unsafe_char(c) && c != '\n';
    if !text.chars().any(raw) {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if raw(c) {
            // Every character of `unsafe_char` is in the BMP: one \uXXXX.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Prints `value` as JSON, or calls `table` to print it for people.
pub(crate) fn show<T: Serialize>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T),
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", json(value, true)?),
        Format::Table => table(value),
    }
    Ok(())
}

/// A table with aligned columns.
pub(crate) struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new(head: &[&str]) -> Self {
        Self {
            head: head.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; every cell is [`sanitize`]d.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| match sanitize(&c) {
                    Cow::Borrowed(_) => c,
                    Cow::Owned(clean) => clean,
                })
                .collect(),
        );
    }

    /// The table as text: columns padded to their widest cell, no
    /// trailing blanks, no final newline.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  "));
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = line(&self.head);
        for r in &self.rows {
            out.push('\n');
            out.push_str(&line(r));
        }
        out
    }

    /// Prints [`Table::render`] and a newline.
    pub(crate) fn print(&self) {
        println!("{}", self.render());
    }
}

/// The value, or `-` for none.
pub(crate) fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A duration in ms, for people: `1.5s`, `10m`, `2h`.
pub(crate) fn dur(ms: u64) -> String {
    match ms {
        0 => "0".to_owned(),
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0).replace(".0s", "s"),
        ms if ms < 3_600_000 => format!("{}m{}", ms / 60_000, secs_tail(ms % 60_000)),
        ms => format!("{}h{}", ms / 3_600_000, mins_tail(ms % 3_600_000)),
    }
}

fn secs_tail(ms: u64) -> String {
    if ms >= 1000 {
        format!("{}s", ms / 1000)
    } else {
        String::new()
    }
}

fn mins_tail(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else {
        String::new()
    }
}

/// A Unix-ms time as UTC `HH:MM:SS`.
pub(crate) fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// A text progress bar of `width` cells, `done` of `total`.
pub(crate) fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = done
        .min(total)
        .saturating_mul(width as u64)
        .checked_div(total)
        .map_or(width, |f| usize::try_from(f).unwrap_or(width));
    format!(
        "[{}{}]",
        "#".repeat(filled),
        ".".repeat(width.saturating_sub(filled))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "N"]);
        t.row(vec!["long-name".into(), "1".into()]);
        t.row(vec!["x".into(), "22".into()]);
        assert_eq!(t.render(), "NAME       N\nlong-name  1\nx          22");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert!(matches!(sanitize("plain – ünïcode ✓"), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(
            sanitize("\u{7}\r\n\t\u{0}\u{7f}"),
            "\\x07\\x0d\\x0a\\x09\\x00\\x7f"
        );
        // C1: U+009B is CSI on terminals that read 8-bit controls.
        assert_eq!(sanitize("x\u{9b}31m\u{85}"), "x\\u{9b}31m\\u{85}");
        // Bidirectional override and isolate.
        assert_eq!(sanitize("a\u{202e}b\u{2066}"), "a\\u{202e}b\\u{2066}");
        // Idempotent: what it writes is plain text.
        assert_eq!(sanitize(&sanitize("\u{1b}]0;t\u{7}")), "\\x1b]0;t\\x07");
    }

    #[test]
    fn table_cells_are_sanitized() {
        let mut t = Table::new(&["WHO", "N"]);
        t.row(vec!["ev\u{1b}[2Jil".into(), "1".into()]);
        let out = t.render();
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert_eq!(out, "WHO          N\nev\\x1b[2Jil  1");
    }

    #[test]
    fn json_escapes_what_serde_leaves_raw_and_reads_back_the_same() {
        let v = serde_json::json!({"c": "a\u{1b}[2J\u{7f}\u{9b}\u{202e}z", "n": [1, "ü"]});
        for pretty in [false, true] {
            let text = json(&v, pretty).unwrap();
            assert!(
                !text.chars().any(|c| unsafe_char(c) && c != '\n'),
                "{text:?}"
            );
            assert!(
                text.contains("\\u001b") && text.contains("\\u009b"),
                "{text}"
            );
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(dur(0), "0");
        assert_eq!(dur(250), "250ms");
        assert_eq!(dur(1500), "1.5s");
        assert_eq!(dur(2000), "2s");
        assert_eq!(dur(600_000), "10m");
        assert_eq!(dur(90_000), "1m30s");
        assert_eq!(dur(7_200_000), "2h");
        assert_eq!(bar(1, 4, 8), "[##......]");
        assert_eq!(bar(5, 4, 4), "[####]");
    }
}
