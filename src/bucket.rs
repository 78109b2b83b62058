//! The one bucketing primitive shared by rollout splitting and flagd `fractional` (v3):
//! canonical CBOR (RFC 8949 §4.2.1) of a value → murmur3 x86_32 (seed 0) →
//! `bucket = (hash as u64 * total) >> 32`.
//!
//! The hasher is streaming so the hot path (rollout split on `[rollout, sticky_key]`)
//! never allocates: the CBOR header bytes and the string bytes are fed in pieces.

use serde_json::Value;

/// Number of buckets a rollout weight is expressed in (basis points: 100% = 10,000).
pub const BASIS_POINTS: u64 = 10_000;

/// Maps a 32-bit hash onto `0..total` without modulo bias: `(h * total) >> 32`.
#[inline]
pub fn scale(hash: u32, total: u64) -> u64 {
    (hash as u64 * total) >> 32
}

/// The rollout bucket (0..10,000) of a sticky key: canonical CBOR of `[rollout, key]`.
#[inline]
pub fn rollout_bucket(rollout: &str, key: &[u8]) -> u32 {
    rollout_bucket_from(&rollout_prefix(rollout), key)
}

/// The hasher state after `[rollout, ` (the array head and the rollout's name): computed
/// once per snapshot, so that a request hashes only its key.
pub fn rollout_prefix(rollout: &str) -> Murmur3 {
    let mut h = Murmur3::new();
    h.write(&[0x82]);
    write_text(&mut h, rollout.as_bytes());
    h
}

/// [`rollout_bucket`] from the rollout's [`rollout_prefix`].
#[inline]
pub fn rollout_bucket_from(prefix: &Murmur3, key: &[u8]) -> u32 {
    let mut h = prefix.clone();
    write_text(&mut h, key);
    scale(h.finish(), BASIS_POINTS) as u32
}

/// murmur3 x86_32 (seed 0) of the canonical CBOR text string `text` (flagd v3 hashing of a
/// string bucketing value), streamed without building the value.
#[inline]
pub fn hash_text(text: &[u8]) -> u32 {
    let mut h = Murmur3::new();
    write_text(&mut h, text);
    h.finish()
}

/// murmur3 x86_32 (seed 0) of the canonical CBOR array `[a, b]` of two text strings (flagd v3
/// `fractional` shorthand: `[flagKey, targetingKey]`), streamed without allocating.
#[inline]
pub fn hash_text_pair(a: &[u8], b: &[u8]) -> u32 {
    let mut h = Murmur3::new();
    h.write(&[0x82]);
    write_text(&mut h, a);
    write_text(&mut h, b);
    h.finish()
}

/// murmur3 x86_32 (seed 0) of the canonical CBOR encoding of `value`.
pub fn hash_value(value: &Value) -> u32 {
    let mut h = Murmur3::new();
    write_value(&mut h, value);
    h.finish()
}

/// murmur3 x86_32 (seed 0) of raw bytes (flagd fractional v2 hashes `flagKey + targetingKey`).
pub fn hash_bytes(bytes: &[u8]) -> u32 {
    let mut h = Murmur3::new();
    h.write(bytes);
    h.finish()
}

/// The canonical CBOR encoding of `value`, for tests and diagnostics.
pub fn canonical_cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

/// A sink for CBOR bytes: either the streaming hasher or a byte vector.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Murmur3 {
    fn put(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
}

fn write_head<S: Sink>(s: &mut S, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        s.put(&[m | n as u8]);
    } else if n <= u8::MAX as u64 {
        s.put(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        let b = (n as u16).to_be_bytes();
        s.put(&[m | 25, b[0], b[1]]);
    } else if n <= u32::MAX as u64 {
        let b = (n as u32).to_be_bytes();
        s.put(&[m | 26, b[0], b[1], b[2], b[3]]);
    } else {
        let mut buf = [0u8; 9];
        buf[0] = m | 27;
        buf[1..].copy_from_slice(&n.to_be_bytes());
        s.put(&buf);
    }
}

fn write_text<S: Sink>(s: &mut S, bytes: &[u8]) {
    write_head(s, 3, bytes.len() as u64);
    s.put(bytes);
}

fn write_i128<S: Sink>(s: &mut S, v: i128) {
    if v >= 0 {
        write_head(s, 0, v as u64);
    } else {
        write_head(s, 1, (-1 - v) as u64);
    }
}

fn write_value<S: Sink>(s: &mut S, value: &Value) {
    match value {
        Value::Null => s.put(&[0xf6]),
        Value::Bool(false) => s.put(&[0xf4]),
        Value::Bool(true) => s.put(&[0xf5]),
        Value::String(t) => write_text(s, t.as_bytes()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_head(s, 0, u);
            } else if let Some(i) = n.as_i64() {
                write_i128(s, i as i128);
            } else {
                write_float(s, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        Value::Array(items) => {
            write_head(s, 4, items.len() as u64);
            for item in items {
                write_value(s, item);
            }
        }
        Value::Object(map) => {
            // Core deterministic encoding sorts keys by their encoded bytes; for text keys
            // that is length first, then bytewise.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| {
                a.len()
                    .cmp(&b.len())
                    .then_with(|| a.as_bytes().cmp(b.as_bytes()))
            });
            write_head(s, 5, keys.len() as u64);
            for k in keys {
                write_text(s, k.as_bytes());
                write_value(s, &map[k.as_str()]);
            }
        }
    }
}

/// Floats with an integral value in the 64-bit integer range are encoded as integers
/// (as flagd's reference does: `1.0` hashes like `1`, `-0.0` like `0`); other floats
/// take the shortest IEEE 754 width that holds them exactly.
fn write_float<S: Sink>(s: &mut S, f: f64) {
    if f.is_finite() && f.fract() == 0.0 && f >= -(2f64.powi(64)) && f < 2f64.powi(64) {
        write_i128(s, f as i128);
        return;
    }
    if f.is_nan() {
        s.put(&[0xf9, 0x7e, 0x00]);
        return;
    }
    if let Some(h) = f64_to_f16_exact(f) {
        let b = h.to_be_bytes();
        s.put(&[0xf9, b[0], b[1]]);
        return;
    }
    let single = f as f32;
    if single as f64 == f {
        let b = single.to_be_bytes();
        s.put(&[0xfa, b[0], b[1], b[2], b[3]]);
        return;
    }
    let b = f.to_be_bytes();
    s.put(&[0xfb, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
}

/// The IEEE 754 half-precision bits of `f` when the conversion is exact.
fn f64_to_f16_exact(f: f64) -> Option<u16> {
    if f.is_infinite() {
        return Some(if f > 0.0 { 0x7c00 } else { 0xfc00 });
    }
    let bits = f.to_bits();
    let sign = ((bits >> 63) as u16) << 15;
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mant = bits & ((1u64 << 52) - 1);
    if f == 0.0 {
        return Some(sign);
    }
    if (-14..=15).contains(&exp) {
        // Normal half: 10 mantissa bits.
        if mant & ((1u64 << 42) - 1) != 0 {
            return None;
        }
        return Some(sign | (((exp + 15) as u16) << 10) | (mant >> 42) as u16);
    }
    if (-24..-14).contains(&exp) {
        // Subnormal half: value = m * 2^-24 with m < 1024.
        let full = mant | (1u64 << 52);
        let shift = 52 - (exp + 24);
        if full & ((1u64 << shift) - 1) != 0 {
            return None;
        }
        return Some(sign | (full >> shift) as u16);
    }
    None
}

/// Streaming murmur3 x86_32 with seed 0.
#[derive(Debug, Clone, Default)]
pub struct Murmur3 {
    h: u32,
    tail: [u8; 4],
    tail_len: usize,
    len: u32,
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

// === impl Murmur3 ===

impl Murmur3 {
    /// A hasher with seed 0.
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn block(&mut self, k: u32) {
        let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        self.h ^= k;
        self.h = self
            .h
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }

    /// Feeds bytes.
    #[inline]
    pub fn write(&mut self, mut bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u32);
        if self.tail_len > 0 {
            let need = 4 - self.tail_len;
            let take = need.min(bytes.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&bytes[..take]);
            self.tail_len += take;
            bytes = &bytes[take..];
            if self.tail_len < 4 {
                return;
            }
            self.block(u32::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut chunks = bytes.chunks_exact(4);
        for c in &mut chunks {
            self.block(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The hash of everything fed so far.
    #[inline]
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            let mut k = 0u32;
            for i in (0..self.tail_len).rev() {
                k = (k << 8) | self.tail[i] as u32;
            }
            h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        }
        h ^= self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_known_values() {
        assert_eq!(hash_bytes(b""), 0);
        assert_eq!(hash_bytes(b"hello"), 0x248b_fa47);
        assert_eq!(
            hash_bytes(b"The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for split in 0..data.len() {
            let mut h = Murmur3::new();
            h.write(&data[..split]);
            h.write(&data[split..]);
            assert_eq!(h.finish(), hash_bytes(data), "split at {split}");
        }
    }

    #[test]
    fn rollout_bucket_matches_value_path() {
        let v = serde_json::json!(["checkout", "user-42"]);
        assert_eq!(
            rollout_bucket("checkout", b"user-42") as u64,
            scale(hash_value(&v), BASIS_POINTS)
        );
        // The per-snapshot prefix gives the same bucket, whatever the name's length.
        for name in [
            "",
            "a",
            "abc",
            "checkout",
            "a-rollout-name-longer-than-23-bytes",
        ] {
            let v = serde_json::json!([name, "user-42"]);
            assert_eq!(
                rollout_bucket_from(&rollout_prefix(name), b"user-42") as u64,
                scale(hash_value(&v), BASIS_POINTS)
            );
        }
    }

    #[test]
    fn text_helpers_match_value_path() {
        assert_eq!(hash_text(b"user1"), hash_value(&serde_json::json!("user1")));
        assert_eq!(
            hash_text_pair(b"flag", b"user-42"),
            hash_value(&serde_json::json!(["flag", "user-42"]))
        );
    }

    #[test]
    fn conformance_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/conformance/fractional-vectors.json"
        );
        let Ok(text) = std::fs::read_to_string(path) else {
            panic!("conformance vectors missing at {path}");
        };
        let doc: Value = serde_json::from_str(&text).unwrap();
        let mut n = 0;
        for v in doc["vectors"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap();
            let h = if let Some(input) = v.get("input") {
                let cbor = canonical_cbor(input);
                assert_eq!(
                    hex::encode(&cbor),
                    v["cbor_hex"].as_str().unwrap(),
                    "{name}"
                );
                hash_value(input)
            } else {
                hash_bytes(v["utf8"].as_str().unwrap().as_bytes())
            };
            assert_eq!(
                h as u64,
                v["murmur3_x86_32_seed0_u32"].as_u64().unwrap(),
                "{name}"
            );
            if let Some(b) = v.get("bucket_w100") {
                assert_eq!(scale(h, 100), b.as_u64().unwrap(), "{name}");
            }
            assert_eq!(scale(h, 2), v["bucket_w2"].as_u64().unwrap(), "{name}");
            n += 1;
        }
        assert!(n >= 13);
    }
}
