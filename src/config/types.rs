//! Small value types shared by both documents: durations and exact percentages.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as `500ms`, `30s`, `5m`, `24h`, `365d` (or a sum such as `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

/// A size in bytes, written as a number or with a unit: `512`, `512B`, `64KiB`, `1MiB`
/// (`KB`/`MB` are read as 1000s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

/// A percentage with at most two decimals, held exactly as basis points (5.25% = 525).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(pub u32);

// === impl Dur ===

impl Dur {
    /// From whole seconds.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    /// From milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    /// Parses `500ms`, `30s`, `5m`, `24h`, `365d`, or a sum like `1h30m`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "invalid duration `{s}`: expected a number, e.g. `30s`"
                ));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration `{s}`: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => {
                    return Err(format!(
                        "invalid duration `{s}`: missing unit (ms, s, m, h, d)"
                    ));
                }
                other => {
                    return Err(format!(
                        "invalid duration `{s}`: unknown unit `{other}` (ms, s, m, h, d)"
                    ));
                }
            };
            let add = n
                .checked_mul(ms)
                .ok_or_else(|| format!("invalid duration `{s}`: too large"))?;
            total = total
                .checked_add(Duration::from_millis(add))
                .ok_or_else(|| format!("invalid duration `{s}`: too large"))?;
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, n) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms.is_multiple_of(n) {
                return write!(f, "{}{unit}", ms / n);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `30s`, `5m`, `24h`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// === impl Size ===

impl Size {
    /// Parses `512`, `512B`, `64KiB`, `1MiB`, `1GiB`, `10KB`, `1MB`.
    pub fn parse(s: &str) -> Result<Size, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size `{s}`: expected a number of bytes, e.g. 64KiB"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            other => {
                return Err(format!(
                    "invalid size `{s}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB)"
                ));
            }
        };
        n.checked_mul(mul)
            .map(Size)
            .ok_or_else(|| format!("invalid size `{s}`: too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, n) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= n && self.0.is_multiple_of(n) {
                return write!(f, "{}{unit}", self.0 / n);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as `64KiB`, `1MiB` or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// === impl Weight ===

impl Weight {
    /// 100% in basis points.
    pub const FULL: Weight = Weight(10_000);

    /// Parses a decimal percentage with at most two decimals into basis points, exactly.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("weight `{text}` must be a percentage from 0 to 100 with at most 2 decimals")
        };
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 2 {
            return Err(bad());
        }
        let whole: u64 = int.parse().map_err(|_| bad())?;
        let mut cents = 0u64;
        for (i, b) in frac.bytes().enumerate() {
            cents += (b - b'0') as u64 * if i == 0 { 10 } else { 1 };
        }
        let bp = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(cents))
            .ok_or_else(bad)?;
        if bp > 10_000 {
            return Err(format!("weight {text} exceeds 100"));
        }
        Ok(Weight(bp as u32))
    }

    /// The weight as a percentage (for display and gauges only).
    pub fn percent(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, c) = (self.0 / 100, self.0 % 100);
        if c == 0 {
            write!(f, "{w}")
        } else if c % 10 == 0 {
            write!(f, "{w}.{}", c / 10)
        } else {
            write!(f, "{w}.{c:02}")
        }
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde_json prints a float as the shortest text that reads back to it, which is the
        // text the user wrote whenever it has at most 15 significant digits: parse that text
        // as a decimal, so no floating-point arithmetic touches the weight.
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                let text = text.strip_suffix(".0").unwrap_or(&text);
                if text.contains(['e', 'E']) {
                    return Err(de::Error::custom(format!(
                        "weight `{text}` must be a percentage from 0 to 100 with at most 2 decimals"
                    )));
                }
                Weight::parse(text).map_err(de::Error::custom)
            }
            serde_json::Value::String(s) => {
                Weight::parse(s.trim_end_matches('%')).map_err(de::Error::custom)
            }
            other => Err(de::Error::custom(format!(
                "weight must be a number, found {other}"
            ))),
        }
    }
}

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(Size::parse("512").unwrap(), Size(512));
        assert_eq!(Size::parse("64KiB").unwrap(), Size(65_536));
        assert_eq!(Size::parse("1MiB").unwrap(), Size(1 << 20));
        assert_eq!(Size::parse("10KB").unwrap(), Size(10_000));
        assert!(Size::parse("1TiB").unwrap_err().contains("unknown unit"));
        assert!(Size::parse("KiB").is_err());
        assert_eq!(Size(65_536).to_string(), "64KiB");
        assert_eq!(Size(1000).to_string(), "1000B");
    }

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("500ms").unwrap(), Dur::millis(500));
        assert_eq!(Dur::parse("1h30m").unwrap(), Dur::secs(5400));
        assert_eq!(Dur::parse("365d").unwrap(), Dur::secs(365 * 86400));
        assert!(Dur::parse("5").is_err());
        assert!(Dur::parse("5x").is_err());
        assert_eq!(Dur::secs(120).to_string(), "2m");
    }

    #[test]
    fn weights_are_exact() {
        for (t, bp) in [
            ("5.25", 525),
            ("0.29", 29),
            ("100", 10_000),
            ("0", 0),
            ("12.5", 1250),
            ("0.01", 1),
        ] {
            assert_eq!(Weight::parse(t).unwrap(), Weight(bp), "{t}");
        }
        assert!(Weight::parse("5.251").is_err());
        assert!(Weight::parse("120").unwrap_err().contains("exceeds 100"));
        assert!(Weight::parse("-1").is_err());
        let w: Weight = serde_json::from_str("0.29").unwrap();
        assert_eq!(w, Weight(29));
        let w: Weight = serde_json::from_str("7").unwrap();
        assert_eq!(w, Weight(700));
        assert!(serde_json::from_str::<Weight>("0.00001").is_err());
        assert_eq!(Weight(525).to_string(), "5.25");
    }
}
