//! The words of enums on the wire (`in_progress`, `not_found`, …).
//!
//! Every unit enum that serde writes as a snake_case string is declared
//! through [`wire_enum!`], which lists each variant's word once and gives
//! the enum `as_str`, `Display` and `FromStr` from that list. No other code
//! spells a variant's word, so logs, metrics labels, messages and command
//! line parsing all say what the wire says; `tests/wire_words.rs` pins
//! every word against what serde writes.

/// A word that names no variant of a wire enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {word:?}: expected one of {}", expected.join(", "))]
pub struct UnknownWord {
    /// What was being read (`trigger status`, `entity kind`, …).
    pub what: &'static str,
    /// The word as given, truncated to 80 characters.
    pub word: String,
    /// Every word that would have been accepted, in declaration order.
    pub expected: &'static [&'static str],
}

impl UnknownWord {
    /// The error for `word`, read as a `what` that accepts `expected`.
    pub fn new(what: &'static str, word: &str, expected: &'static [&'static str]) -> Self {
        Self {
            what,
            word: word.chars().take(80).collect(),
            expected,
        }
    }
}

/// Declares a unit enum together with the word of each variant, and gives
/// it `ALL`, `as_str`, `Display` and `FromStr` (with [`UnknownWord`] as its
/// error, which names the enum as `what`). The serde attributes stay on the
/// enum; the golden test checks that serde writes the same words.
///
/// ```
/// phasegate_proto::wire_enum! {
///     /// How a light is set.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Light as "light" {
///         /// Lit.
///         On => "on",
///         /// Dark.
///         Off => "off",
///     }
/// }
/// assert_eq!(Light::On.as_str(), "on");
/// assert_eq!("off".parse::<Light>(), Ok(Light::Off));
/// assert!("dim".parse::<Light>().is_err());
/// ```
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// Every variant's word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word on the wire, as serde writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = $crate::UnknownWord;

            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownWord::new($what, s, Self::WORDS)),
                }
            }
        }
    };
}
