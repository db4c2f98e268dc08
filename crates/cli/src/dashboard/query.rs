//! Query strings of the console's own API (`?q=chec&cursor=…`): a small
//! reader, since the workspace's axum is built without its `query` feature.

/// The value of `key` in the query string `query` (without the `?`),
/// percent-decoded, `+` read as a space; `None` when absent. A malformed
/// escape is kept as written.
pub(crate) fn param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_pair) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

#[cfg(test)]
mod tests {
    use super::param;

    #[test]
    fn reads_decodes_and_misses() {
        let q = Some("q=check%20out&cursor=a%2Bb&x&bad=%zz+1");
        assert_eq!(param(q, "q").as_deref(), Some("check out"));
        assert_eq!(param(q, "cursor").as_deref(), Some("a+b"));
        assert_eq!(param(q, "x").as_deref(), Some(""));
        assert_eq!(param(q, "bad").as_deref(), Some("%zz 1"));
        assert_eq!(param(q, "none"), None);
        assert_eq!(param(None, "q"), None);
        assert_eq!(param(Some("q=%e2%9c%93"), "q").as_deref(), Some("\u{2713}"));
    }
}
