//! How a field's value is read (SPEC.md §2, "Values, so that every
//! implementation agrees"): missing, string form, number form, version.

use std::borrow::Cow;
use std::cmp::Ordering;

use phasegate_proto::{Field, User};

use crate::AgentContext;

/// 2^53: below it every whole f64 is an exact integer.
const TWO_POW_53: f64 = 9_007_199_254_740_992.0;

/// The string form of a number: an integer when it is whole and below 2^53
/// in magnitude (`7.0` → `"7"`, `-0.0` → `"0"`), else the fewest
/// significant digits that read back to the same f64, written positionally
/// without exponent (2^64 → `"18446744073709552000"`, 1e-7 → `"0.0000001"`).
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < TWO_POW_53 {
        // Whole and below 2^53: the cast is exact, and it turns -0.0 into 0.
        #[allow(clippy::cast_possible_truncation)]
        let i = x as i64;
        i.to_string()
    } else {
        // Rust's `Display` for f64 picks the shortest round-trip digits (as
        // Ryu and JavaScript do) and never switches to exponent notation.
        x.to_string()
    }
}

/// The number form of a string: `Some` when it matches
/// `^-?[0-9]+(\.[0-9]+)?$`, read as the nearest f64.
pub fn parse_number(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    if !all_digits(int) || !frac.is_none_or(all_digits) {
        return None;
    }
    // Rust's parser rounds correctly; a long enough digit string gives
    // ±inf, which still compares as the contract expects.
    s.parse().ok()
}

/// Compares two versions (`^[0-9]+(\.[0-9]+)*$`, parts fitting u64, missing
/// parts 0): `None` unless both are versions. `1.10` > `1.9.9`, `7` = `7.0`.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let b = parse_version(b)?;
    compare_version(a, &b)
}

/// Non-empty and ASCII digits only.
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// One part of a version: digits only (so no `+`, which `u64::from_str`
/// would accept) and fitting u64.
fn version_part(s: &str) -> Option<u64> {
    if all_digits(s) { s.parse().ok() } else { None }
}

/// The parts of a version, trailing zeros kept; `None` when not a version.
pub(crate) fn parse_version(s: &str) -> Option<Vec<u64>> {
    s.split('.').map(version_part).collect()
}

/// Compares the version `s` with parsed `operand` parts without allocating;
/// `None` when `s` is not a version.
pub(crate) fn compare_version(s: &str, operand: &[u64]) -> Option<Ordering> {
    let mut ord = Ordering::Equal;
    let mut len = 0;
    // Every part is parsed even once the order is known: a later bad part
    // still makes `s` no version at all.
    for part in s.split('.') {
        let n = version_part(part)?;
        if ord == Ordering::Equal {
            ord = n.cmp(operand.get(len).unwrap_or(&0));
        }
        len += 1;
    }
    if ord == Ordering::Equal && operand.iter().skip(len).any(|&p| p != 0) {
        ord = Ordering::Less;
    }
    Some(ord)
}

/// A field's value as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FieldValue<'a> {
    /// Absent, null, an object or an array.
    Missing,
    /// A string.
    Str(&'a str),
    /// A number, taken as f64.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl<'a> FieldValue<'a> {
    /// Reads one JSON value.
    pub(crate) fn from_json(v: &'a serde_json::Value) -> Self {
        match v {
            serde_json::Value::String(s) => Self::Str(s),
            serde_json::Value::Number(n) => n.as_f64().map_or(Self::Missing, Self::Num),
            serde_json::Value::Bool(b) => Self::Bool(*b),
            serde_json::Value::Null
            | serde_json::Value::Array(_)
            | serde_json::Value::Object(_) => Self::Missing,
        }
    }

    /// Reads `field` of `user`, or of the evaluating agent.
    pub(crate) fn read(field: &Field, user: &'a User, agent: &'a AgentContext) -> Self {
        match field {
            Field::UserId => Self::from_json(&user.user_id),
            Field::Email => Self::from_json(&user.email),
            Field::Country => Self::from_json(&user.country),
            Field::AppVersion => Self::from_json(&user.app_version),
            Field::Custom(key) => match &user.custom {
                serde_json::Value::Object(map) => {
                    map.get(key).map_or(Self::Missing, Self::from_json)
                }
                // `custom` that is not an object makes every key missing.
                _ => Self::Missing,
            },
            Field::Segment => Self::Str(&agent.segment),
            Field::Tier => agent.tier.as_deref().map_or(Self::Missing, Self::Str),
        }
    }

    /// The string form; `None` when missing.
    pub(crate) fn string_form(self) -> Option<Cow<'a, str>> {
        match self {
            Self::Missing => None,
            Self::Str(s) => Some(Cow::Borrowed(s)),
            Self::Num(x) => Some(Cow::Owned(format_number(x))),
            Self::Bool(true) => Some(Cow::Borrowed("true")),
            Self::Bool(false) => Some(Cow::Borrowed("false")),
        }
    }

    /// The number form; `None` when not a number (booleans are not).
    pub(crate) fn number_form(self) -> Option<f64> {
        match self {
            Self::Num(x) => Some(x),
            Self::Str(s) => parse_number(s),
            Self::Missing | Self::Bool(_) => None,
        }
    }
}

/// The unit of bucketing: `user_id` as a string, empty when missing.
pub(crate) fn unit(user: &User) -> Cow<'_, str> {
    FieldValue::from_json(&user.user_id)
        .string_form()
        .unwrap_or_default()
}

/// True when `needle` occurs in `hay`, ASCII letters folded on both sides. Byte-wise is exact for UTF-8: folding touches only ASCII
/// bytes, and a valid needle cannot match starting mid-character.
pub(crate) fn contains_folded(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    if needle.is_empty() {
        return true;
    }
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// True when `prefix` is a prefix of `s`, ASCII letters folded.
pub(crate) fn starts_with_folded(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
// A failed unwrap in a test is a failed test, which is what we want.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_format_as_the_contract_says() {
        let table: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (7.0, "7"),
            (-7.0, "-7"),
            (7.5, "7.5"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-7, "0.0000001"),
            (-1.5e-10, "-0.00000000015"),
            (5e-324, &format!("0.{}5", "0".repeat(323))),
            (9_007_199_254_740_991.0, "9007199254740991"),
            (-9_007_199_254_740_991.0, "-9007199254740991"),
            // 2^53 is no longer "below 2^53": shortest digits, positionally.
            (9_007_199_254_740_992.0, "9007199254740992"),
            (18_446_744_073_709_551_616.0, "18446744073709552000"),
            (1e21, "1000000000000000000000"),
            (1.5e300, &format!("15{}", "0".repeat(299))),
            (f64::MAX, &format!("17976931348623157{}", "0".repeat(292))),
            (123_456.789, "123456.789"),
        ];
        for &(x, want) in table {
            assert_eq!(format_number(x), want, "format_number({x:e})");
        }
    }

    #[test]
    fn strings_are_numbers_only_in_the_plain_decimal_form() {
        let table: &[(&str, Option<f64>)] = &[
            ("42", Some(42.0)),
            ("-42", Some(-42.0)),
            ("42.0", Some(42.0)),
            ("007.50", Some(7.5)),
            ("-0", Some(0.0)),
            ("0.30000000000000004", Some(0.1 + 0.2)),
            ("9007199254740993", Some(9_007_199_254_740_992.0)),
            ("", None),
            ("-", None),
            (" 7", None),
            ("7 ", None),
            ("+7", None),
            ("1e3", None),
            ("-.5", None),
            (".5", None),
            ("5.", None),
            ("1.2.3", None),
            ("0x10", None),
            ("inf", None),
            ("NaN", None),
            ("٣", None),
        ];
        for &(s, want) in table {
            assert_eq!(parse_number(s), want, "parse_number({s:?})");
        }
        assert_eq!(parse_number(&"9".repeat(400)), Some(f64::INFINITY));
    }

    #[test]
    fn versions_compare_part_by_part_with_missing_parts_zero() {
        use Ordering::*;
        let table: &[(&str, &str, Option<Ordering>)] = &[
            ("1.10", "1.9.9", Some(Greater)),
            ("1.9.9", "1.10", Some(Less)),
            ("7", "7.0", Some(Equal)),
            ("7.0.0.0", "7", Some(Equal)),
            ("7.0.1", "7", Some(Greater)),
            ("7", "7.0.1", Some(Less)),
            ("01.2", "1.2", Some(Equal)),
            (
                "18446744073709551615",
                "18446744073709551614",
                Some(Greater),
            ),
            ("18446744073709551616", "1", None),
            ("1", "18446744073709551616", None),
            ("", "1", None),
            ("1.", "1", None),
            (".1", "1", None),
            ("1..2", "1", None),
            ("1.2a", "1", None),
            ("v1.2", "1", None),
            ("+1", "1", None),
            ("-1", "1", None),
            // A bad part after the order is known still makes it no version.
            ("2.x", "1", None),
        ];
        for &(a, b, want) in table {
            assert_eq!(
                compare_versions(a, b),
                want,
                "compare_versions({a:?}, {b:?})"
            );
        }
    }

    #[test]
    fn json_shapes_read_as_the_contract_says() {
        let table = [
            (json!(null), FieldValue::Missing),
            (json!({"a": 1}), FieldValue::Missing),
            (json!([1]), FieldValue::Missing),
            (json!([]), FieldValue::Missing),
            (json!("x"), FieldValue::Str("x")),
            (json!(""), FieldValue::Str("")),
            (json!(7), FieldValue::Num(7.0)),
            (json!(true), FieldValue::Bool(true)),
        ];
        for (v, want) in &table {
            assert_eq!(FieldValue::from_json(v), *want, "{v}");
        }
        assert_eq!(
            FieldValue::Bool(false).string_form().as_deref(),
            Some("false")
        );
        assert_eq!(FieldValue::Num(7.0).string_form().as_deref(), Some("7"));
        assert_eq!(FieldValue::Bool(true).number_form(), None);
        assert_eq!(FieldValue::Str("7.0").number_form(), Some(7.0));
    }

    #[test]
    fn fields_read_user_and_agent() {
        let user: User = serde_json::from_value(json!({
            "user_id": 42, "email": "A@x.io", "country": null,
            "custom": {"plan": "pro", "a.b": 1, "a": {"b": 2}}
        }))
        .unwrap();
        let agent = AgentContext::new("prod-eu", None);
        let read = |f: &str| Field::parse(f).map(|f| FieldValue::read(&f, &user, &agent));
        assert_eq!(read("user_id"), Some(FieldValue::Num(42.0)));
        assert_eq!(read("email"), Some(FieldValue::Str("A@x.io")));
        assert_eq!(read("country"), Some(FieldValue::Missing));
        assert_eq!(read("app_version"), Some(FieldValue::Missing));
        assert_eq!(read("custom.plan"), Some(FieldValue::Str("pro")));
        // The key is everything after the first `custom.`: no nesting.
        assert_eq!(read("custom.a.b"), Some(FieldValue::Num(1.0)));
        assert_eq!(read("custom.nope"), Some(FieldValue::Missing));
        assert_eq!(read("segment"), Some(FieldValue::Str("prod-eu")));
        assert_eq!(read("tier"), Some(FieldValue::Missing));
        assert_eq!(unit(&user), "42");

        let not_object = User {
            custom: json!(["plan"]),
            ..User::default()
        };
        assert_eq!(
            FieldValue::read(&Field::Custom("plan".into()), &not_object, &agent),
            FieldValue::Missing
        );
        assert_eq!(unit(&not_object), "");
    }

    #[test]
    fn folding_is_ascii_only() {
        assert!(contains_folded("ann@EXAMPLE.com", "example.com"));
        assert!(contains_folded("x", ""));
        assert!(!contains_folded("", "x"));
        assert!(contains_folded("ÄRGER", "Är"));
        // Non-ASCII letters are not folded: Ä ≠ ä, ß ≠ ss.
        assert!(!contains_folded("äRGER", "Är"));
        assert!(!contains_folded("STRAẞE", "straße"));
        assert!(starts_with_folded("STRASSENBAHN", "strasse"));
        assert!(starts_with_folded("abc", ""));
        assert!(!starts_with_folded("ab", "abc"));
        assert!(!starts_with_folded("Zoë", "ZOË"));
    }
}
