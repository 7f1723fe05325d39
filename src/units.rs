//! Units in config values: sizes and durations, and their parsers.
//!
//! A leaf: it imports nothing of the crate, so every role (and the command
//! line) can use it without an arrow running back up.
//!
//! The same parsers back the command line (clap `value_parser`s), the
//! environment and TOML files (serde), so `64MiB` means the same thing
//! everywhere.
//!
//! # Sizes
//! A size is a non-negative integer with an optional unit, with or without a
//! space between them; units are case-insensitive:
//!
//! | unit | factor |
//! | --- | --- |
//! | none, `B` | 1 byte |
//! | `KiB`, `MiB`, `GiB`, `TiB` | 1024, 1024², 1024³, 1024⁴ (binary) |
//! | `KB`, `MB`, `GB`, `TB` | 1000, 1000², 1000³, 1000⁴ (decimal, SI) |
//! | `K`, `M`, `G`, `T` | binary, as memcached's `-m 64` means 64 MiB |
//!
//! # Durations
//! A duration is a non-negative integer with an optional unit: `ms`, `s`,
//! `m`, `h`, `d` (also `sec`/`secs`, `min`/`mins`, `hour`/`hours`,
//! `day`/`days`). A bare number is seconds, as memcached's exptime is.
//!
//! # Use
//! - clap: `#[arg(value_parser = memgate::units::parse_size_arg)]` for a
//!   `u64`, or a [`Size`] / [`Dur`] field (they implement `FromStr`).
//! - serde: a [`Size`] / [`Dur`] field, or `#[serde(with = "size_serde")]`
//!   on a plain `u64` (accepts an integer or a string).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size or duration that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The value was empty or only whitespace.
    #[error("empty {what}: expected a number with an optional unit, e.g. {example}")]
    Empty {
        /// "size" or "duration".
        what: &'static str,
        /// An example of a valid value.
        example: &'static str,
    },
    /// The numeric part is missing or not a non-negative integer.
    #[error("invalid {what} {input:?}: expected a non-negative integer with an optional unit, e.g. {example}")]
    InvalidNumber {
        /// "size" or "duration".
        what: &'static str,
        /// The value as given.
        input: String,
        /// An example of a valid value.
        example: &'static str,
    },
    /// The unit is not one we know.
    #[error("invalid {what} {input:?}: unknown unit {unit:?} (expected one of {expected})")]
    UnknownUnit {
        /// "size" or "duration".
        what: &'static str,
        /// The value as given.
        input: String,
        /// The unit as given.
        unit: String,
        /// The units we accept.
        expected: &'static str,
    },
    /// The value does not fit in 64 bits.
    #[error("invalid {what} {input:?}: too large")]
    Overflow {
        /// "size" or "duration".
        what: &'static str,
        /// The value as given.
        input: String,
    },
}

const SIZE_UNITS: &str = "B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB";
const DURATION_UNITS: &str = "us, ms, s, m, h, d";
const SIZE_EXAMPLE: &str = "\"64MiB\"";
const DURATION_EXAMPLE: &str = "\"30s\"";

/// Splits `"64 MiB"` into `(64, "MiB")`; the unit may be empty.
fn split_number<'a>(
    s: &'a str,
    what: &'static str,
    example: &'static str,
) -> Result<(u64, &'a str), UnitError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(UnitError::Empty { what, example });
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(UnitError::InvalidNumber {
            what,
            input: s.to_owned(),
            example,
        });
    }
    let n: u64 = digits.parse().map_err(|_| UnitError::Overflow {
        what,
        input: s.to_owned(),
    })?;
    Ok((n, unit.trim_start()))
}

/// Parses a size in bytes; see the [module docs](self) for the units.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    const WHAT: &str = "size";
    let (n, unit) = split_number(s, WHAT, SIZE_EXAMPLE)?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(UnitError::UnknownUnit {
                what: WHAT,
                input: s.trim().to_owned(),
                unit: unit.to_owned(),
                expected: SIZE_UNITS,
            })
        }
    };
    n.checked_mul(factor).ok_or_else(|| UnitError::Overflow {
        what: WHAT,
        input: s.trim().to_owned(),
    })
}

/// Parses a duration; see the [module docs](self) for the units.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    const WHAT: &str = "duration";
    let (n, unit) = split_number(s, WHAT, DURATION_EXAMPLE)?;
    let overflow = || UnitError::Overflow {
        what: WHAT,
        input: s.trim().to_owned(),
    };
    let secs = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    let d = match unit.to_ascii_lowercase().as_str() {
        "us" | "µs" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" | "sec" | "secs" => Some(Duration::from_secs(n)),
        "m" | "min" | "mins" => secs(60),
        "h" | "hour" | "hours" => secs(3_600),
        "d" | "day" | "days" => secs(86_400),
        _ => {
            return Err(UnitError::UnknownUnit {
                what: WHAT,
                input: s.trim().to_owned(),
                unit: unit.to_owned(),
                expected: DURATION_UNITS,
            })
        }
    };
    d.ok_or_else(overflow)
}

/// [`parse_size`] for clap: `#[arg(value_parser = parse_size_arg)]`.
pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// [`parse_duration`] for clap: `#[arg(value_parser = parse_duration_arg)]`.
pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Formats a byte count with the largest binary unit that divides it
/// exactly (`67108864` → `"64MiB"`, `1000` → `"1000B"`), so that it parses
/// back to the same number.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    if bytes != 0 {
        for (factor, unit) in UNITS {
            if bytes % factor == 0 {
                return format!("{}{unit}", bytes / factor);
            }
        }
    }
    format!("{bytes}B")
}

/// A size in bytes that parses from `"64MiB"` (or an integer, in serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size(s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"64MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Serializes as a string such as `"64MiB"` (see [`format_size`]).
impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(self.0))
    }
}

/// `#[serde(with = "crate::units::size_serde")]` for a `u64` byte count.
pub mod size_serde {
    use super::Size;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Deserializes an integer or a size string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Size::deserialize(d).map(|s| s.0)
    }

    /// Serializes as a size string such as `"64MiB"`.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        Size(*v).serialize(s)
    }
}

/// A duration that parses from `"30s"` (or an integer of seconds, in serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Dur {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Dur)
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

impl fmt::Display for Dur {
    /// Formats with the largest unit that divides the duration exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() != 0 {
            // Sub-millisecond precision is dropped: config durations are ms at best.
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        match s {
            0 => f.write_str("0s"),
            s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s % 3_600 == 0 => write!(f, "{}h", s / 3_600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: a number of seconds or a string such as \"30s\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Serializes as a string such as `"30s"`.
impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests;
