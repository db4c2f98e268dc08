//! Printing results: aligned tables for people, JSON for programs.

use serde::Serialize;

use crate::Format;

/// Prints `value` as JSON, or calls `table` to print it for people.
pub(crate) fn show<T: Serialize>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T),
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
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

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders it.
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

    /// Prints it.
    pub(crate) fn print(&self) {
        println!("{}", self.render());
    }
}

/// `-` for nothing.
pub(crate) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
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
