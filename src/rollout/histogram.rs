//! The latency bucket layout shared by the windows: log-linear (HDR-style) buckets over
//! microseconds, and quantiles read back from bucket counts.
//!
//! Values below 16 µs get one bucket per microsecond. Above, every power of two is cut into
//! 16 equal sub-buckets, so a bucket is at most 1/16 of its lower bound wide; reporting its
//! midpoint is within 1/32 (3.2%) of any value in it. Latency is truncated to whole
//! microseconds first, which adds at most 0.1% from 1 ms up. The top is 2^26 µs (67.1 s);
//! anything longer lands in one overflow bucket, reported as 67.1 s ("at least").
//! 369 buckets in all, so a per-second histogram is 369 counters.

use std::time::Duration;

/// Sub-buckets per power of two, as a bit count (16 sub-buckets).
const SUB_BITS: u32 = 4;
/// Sub-buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// Values at or above `2^TOP_EXP` µs overflow.
const TOP_EXP: u32 = 26;
/// Index of the overflow bucket.
pub const OVERFLOW: usize = (SUB + (TOP_EXP - SUB_BITS) as u64 * SUB) as usize;
/// Number of buckets, overflow included.
pub const BUCKETS: usize = OVERFLOW + 1;

/// The bucket a latency falls in.
#[inline]
pub fn bucket_of(latency: Duration) -> usize {
    // as_micros is u128; saturate before the narrowing so a huge duration overflows cleanly.
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    bucket_of_micros(us)
}

/// The bucket a latency in whole microseconds falls in.
#[inline]
pub fn bucket_of_micros(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    if us >= 1 << TOP_EXP {
        return OVERFLOW;
    }
    // k = floor(log2(us)) ≥ SUB_BITS; the top SUB_BITS+1 bits pick the sub-bucket.
    let k = 63 - us.leading_zeros();
    let sub = (us >> (k - SUB_BITS)) - SUB;
    (SUB + (k - SUB_BITS) as u64 * SUB + sub) as usize
}

/// The half-open range `[low, high)` in microseconds that bucket `i` covers
/// (`high` is `u64::MAX` for the overflow bucket).
pub fn bounds_micros(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i + 1);
    }
    if i >= OVERFLOW as u64 {
        return (1 << TOP_EXP, u64::MAX);
    }
    let j = i - SUB;
    let shift = j / SUB;
    let low = (SUB + j % SUB) << shift;
    (low, low + (1 << shift))
}

/// The value reported for bucket `i`: its midpoint, or its lower bound for the overflow.
pub fn representative(i: usize) -> Duration {
    let (low, high) = bounds_micros(i);
    if i >= OVERFLOW {
        return Duration::from_micros(low);
    }
    // Midpoint in nanoseconds so narrow buckets keep their half microsecond.
    Duration::from_nanos((low + high) * 500)
}

/// The `q` quantile (nearest rank: the `ceil(q·n)`-th smallest) of a histogram, `None` when
/// it holds nothing.
pub fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(representative(i));
        }
    }
    Some(representative(OVERFLOW))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut expect_low = 0;
        for i in 0..OVERFLOW {
            let (low, high) = bounds_micros(i);
            assert_eq!(low, expect_low, "bucket {i}");
            assert!(high > low);
            assert_eq!(bucket_of_micros(low), i);
            assert_eq!(bucket_of_micros(high - 1), i);
            expect_low = high;
        }
        assert_eq!(expect_low, 1 << TOP_EXP);
        assert_eq!(bucket_of_micros(1 << TOP_EXP), OVERFLOW);
        assert_eq!(bucket_of(Duration::from_secs(3600)), OVERFLOW);
        assert_eq!(bucket_of(Duration::MAX), OVERFLOW);
        assert_eq!(BUCKETS, 369);
    }

    #[test]
    fn midpoint_is_within_a_thirty_second_of_every_value() {
        for us in (16..1 << TOP_EXP).step_by(997) {
            let rep = representative(bucket_of_micros(us)).as_nanos() as f64;
            let v = us as f64 * 1000.0;
            assert!(
                (rep - v).abs() / v <= 1.0 / 32.0 + 1e-12,
                "{us} µs reported as {rep} ns"
            );
        }
    }

    #[test]
    fn quantile_uses_nearest_rank() {
        let mut counts = [0u64; BUCKETS];
        assert_eq!(quantile(&counts, 0.99), None);
        counts[bucket_of_micros(10)] = 99;
        counts[bucket_of_micros(1000)] = 1;
        // rank 99 of 100 is still the 10 µs bucket; p100 is the slow one.
        assert_eq!(
            quantile(&counts, 0.99),
            Some(representative(bucket_of_micros(10)))
        );
        assert_eq!(
            quantile(&counts, 1.0),
            Some(representative(bucket_of_micros(1000)))
        );
    }
}
