//! Keyset pagination of every `*.list` (SPEC.md §6 "Lists are paginated").
//!
//! Pure: a page is the `limit` smallest items whose sort key is strictly
//! after the cursor's key. The cursor carries the key of the last item of
//! the previous page, never an offset, so items written or removed between
//! two pages move nothing: nothing is returned twice, and nothing present
//! throughout is skipped.

use std::cmp::Reverse;

use phasegate_proto::{ApiError, DEFAULT_PAGE, MAX_PAGE};

/// A position in a list's order that a cursor can carry.
pub(crate) trait SortKey: Ord + Sized {
    /// The key as text parts (none may contain a NUL byte).
    fn to_parts(&self) -> Vec<String>;
    /// The key back from its parts; `None` when they do not make one.
    fn from_parts(parts: &[&str]) -> Option<Self>;
}

/// Pipelines and specs: by name.
impl SortKey for String {
    fn to_parts(&self) -> Vec<String> {
        vec![self.clone()]
    }
    fn from_parts(parts: &[&str]) -> Option<Self> {
        match parts {
            [name] => Some((*name).to_owned()),
            _ => None,
        }
    }
}

/// Agents: by segment, then agent id.
impl SortKey for (String, String) {
    fn to_parts(&self) -> Vec<String> {
        vec![self.0.clone(), self.1.clone()]
    }
    fn from_parts(parts: &[&str]) -> Option<Self> {
        match parts {
            [a, b] => Some(((*a).to_owned(), (*b).to_owned())),
            _ => None,
        }
    }
}

/// Triggers: newest `created_at_ms` first, then id.
impl SortKey for (Reverse<u64>, String) {
    fn to_parts(&self) -> Vec<String> {
        vec![self.0.0.to_string(), self.1.clone()]
    }
    fn from_parts(parts: &[&str]) -> Option<Self> {
        match parts {
            [ms, id] => Some((Reverse(ms.parse().ok()?), (*id).to_owned())),
            _ => None,
        }
    }
}

/// What one page request asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageRequest<K> {
    /// At most this many items.
    pub(crate) limit: usize,
    /// Only items strictly after this key; `None` from the start.
    pub(crate) after: Option<K>,
}

impl<K: SortKey> PageRequest<K> {
    /// Checks `limit` (default [`DEFAULT_PAGE`], 1 to [`MAX_PAGE`]) and
    /// decodes `cursor`.
    ///
    /// # Errors
    ///
    /// `invalid` for a limit out of range or a cursor this list did not make.
    pub(crate) fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::invalid(format!(
                "limit: must be from 1 to {MAX_PAGE}, got {limit}"
            )));
        }
        let after = match cursor {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ApiError::invalid(
                    "cursor: not a cursor of this list; pass next_cursor of the previous page as is",
                )
            })?),
        };
        Ok(Self {
            limit: limit as usize,
            after,
        })
    }
}

/// One page: its items in order and the cursor of the next page, `None`
/// on the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_cursor: Option<String>,
}

/// The page `req` asks for out of `items` (in any order), ordered by `key`.
///
/// Costs one key per item and a sort of the items after the cursor; the
/// caller clones only what the page holds.
pub(crate) fn page<T, K: SortKey>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
    req: &PageRequest<K>,
) -> Page<T> {
    let mut after: Vec<(K, T)> = items
        .into_iter()
        .map(|t| (key(&t), t))
        .filter(|(k, _)| req.after.as_ref().is_none_or(|a| k > a))
        .collect();
    let more = after.len() > req.limit;
    if more {
        // Only the first `limit` need sorting.
        after.select_nth_unstable_by(req.limit, |a, b| a.0.cmp(&b.0));
        after.truncate(req.limit);
    }
    after.sort_by(|a, b| a.0.cmp(&b.0));
    let next_cursor = if more {
        after.last().map(|(k, _)| encode_cursor(k))
    } else {
        None
    };
    Page {
        items: after.into_iter().map(|(_, t)| t).collect(),
        next_cursor,
    }
}

/// What the items of one page may take, encoded as JSON (larger than
/// MessagePack for these types): the reply, envelope included, must stay
/// under the 1 MiB body limit whatever `limit` asked for.
pub(crate) const PAGE_BUDGET_BYTES: usize = 768 * 1024;

/// `p` cut short where its items outgrow `budget` bytes (JSON), with the
/// cursor moved to the last item kept; at least one item stays. Keyset
/// cursors make an early end free: the next page starts after it.
pub(crate) fn within_bytes<T: serde::Serialize, K: SortKey>(
    mut p: Page<T>,
    key: impl Fn(&T) -> K,
    budget: usize,
) -> Page<T> {
    let mut used = 0;
    for (i, item) in p.items.iter().enumerate() {
        // An item that cannot be encoded fails the reply anyway; count it
        // as nothing here and let the encoder say so.
        used +=
            phasegate_proto::encode(phasegate_proto::Encoding::Json, item).map_or(0, |b| b.len());
        if used > budget && i > 0 {
            p.items.truncate(i);
            p.next_cursor = p.items.last().map(|t| encode_cursor(&key(t)));
            break;
        }
    }
    p
}

/// Hex of the key's parts joined by NUL: opaque to clients, and safe in
/// any encoding and in a shell.
fn encode_cursor<K: SortKey>(key: &K) -> String {
    let joined = key.to_parts().join("\0");
    joined.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor<K: SortKey>(cursor: &str) -> Option<K> {
    let hex = cursor.as_bytes();
    if hex.is_empty() || !hex.len().is_multiple_of(2) || hex.len() > 2048 {
        return None;
    }
    let bytes = hex
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let parts: Vec<&str> = text.split('\0').collect();
    // No name, id or number is empty.
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    K::from_parts(&parts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i:03}")).collect()
    }

    fn req<K: SortKey>(limit: u32, cursor: Option<&str>) -> PageRequest<K> {
        PageRequest::parse(Some(limit), cursor).unwrap()
    }

    #[test]
    fn limits_default_and_bounds() {
        let d: PageRequest<String> = PageRequest::parse(None, None).unwrap();
        assert_eq!(d.limit, DEFAULT_PAGE as usize);
        assert!(PageRequest::<String>::parse(Some(0), None).is_err());
        assert!(PageRequest::<String>::parse(Some(MAX_PAGE + 1), None).is_err());
        assert!(PageRequest::<String>::parse(Some(MAX_PAGE), None).is_ok());
    }

    #[test]
    fn malformed_cursors_are_invalid() {
        for bad in ["", "zz", "abc", "00", "6100"] {
            let e = PageRequest::<(String, String)>::parse(None, Some(bad)).unwrap_err();
            assert_eq!(e.code, phasegate_proto::ErrorCode::Invalid, "{bad}");
        }
        // A trigger cursor needs a number first.
        let c = encode_cursor(&("x".to_owned(), "y".to_owned()));
        assert!(PageRequest::<(Reverse<u64>, String)>::parse(None, Some(&c)).is_err());
    }

    #[test]
    fn walks_every_item_once_in_order() {
        let all = names(23);
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = page(
                all.iter().rev(),
                |s| (*s).clone(),
                &req(5, cursor.as_deref()),
            );
            assert!(p.items.len() <= 5);
            seen.extend(p.items.into_iter().cloned());
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn exact_multiple_ends_without_an_empty_page() {
        let all = names(10);
        let p = page(all.iter(), |s| (*s).clone(), &req(10, None));
        assert_eq!(p.items.len(), 10);
        assert_eq!(p.next_cursor, None);
    }

    #[test]
    fn stable_under_concurrent_writes() {
        // Items removed and added between pages: nothing is returned twice,
        // and nothing present throughout is skipped.
        let mut all = names(30);
        let p1 = page(all.iter().cloned(), Clone::clone, &req(10, None));
        let mut seen = p1.items;
        all.retain(|n| n != "n002" && n != "n015");
        all.push("n000a".to_owned()); // before the cursor: not seen, fine
        all.push("n020a".to_owned()); // after it: seen
        let p2 = page(
            all.iter(),
            |s| (*s).clone(),
            &req(100, p1.next_cursor.as_deref()),
        );
        seen.extend(p2.items.into_iter().cloned());
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(dedup, seen, "no duplicates, in order");
        for n in names(30).iter().filter(|n| *n != "n002" && *n != "n015") {
            assert!(seen.contains(n), "{n} present throughout was skipped");
        }
        assert!(seen.contains(&"n020a".to_owned()));
    }

    #[test]
    fn triggers_newest_first_then_id() {
        let ts = [(5u64, "b"), (9, "a"), (5, "a"), (1, "z")];
        let key = |t: &&(u64, &str)| (Reverse(t.0), t.1.to_owned());
        let p1 = page(ts.iter(), key, &req(2, None));
        assert_eq!(p1.items, vec![&(9, "a"), &(5, "a")]);
        let p2 = page(ts.iter(), key, &req(2, p1.next_cursor.as_deref()));
        assert_eq!(p2.items, vec![&(5, "b"), &(1, "z")]);
        assert_eq!(p2.next_cursor, None);
    }

    #[test]
    fn pages_stop_before_outgrowing_the_reply() {
        let all: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(100))).collect();
        let p = page(all.clone(), Clone::clone, &req(10, None));
        assert_eq!(p.next_cursor, None);
        // Each item is 103 bytes of JSON: three fit in 350.
        let cut = within_bytes(p, Clone::clone, 350);
        assert_eq!(cut.items, all[..3].to_vec());
        let rest = page(
            all.clone(),
            Clone::clone,
            &req(10, cut.next_cursor.as_deref()),
        );
        assert_eq!(
            rest.items,
            all[3..].to_vec(),
            "the next page starts after the cut"
        );
        // One item larger than the budget still makes a page.
        let one = within_bytes(
            page(all.clone(), Clone::clone, &req(10, None)),
            Clone::clone,
            1,
        );
        assert_eq!(one.items.len(), 1);
        assert!(one.next_cursor.is_some());
    }

    #[test]
    fn cursor_round_trips_any_text() {
        let k = ("seg-1".to_owned(), "agent.é_2".to_owned());
        let back: (String, String) = decode_cursor(&encode_cursor(&k)).unwrap();
        assert_eq!(back, k);
    }
}
