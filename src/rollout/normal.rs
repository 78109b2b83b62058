//! The inverse of the standard normal CDF, for the one-sided quantile of `confidence`.
//!
//! Wichura's algorithm AS 241 (PPND16, Applied Statistics 37(3), 1988): three rational
//! approximations, relative error about 1e-16 over (0, 1). Pure arithmetic, no tables.

/// The `p` quantile of the standard normal distribution (`normal_quantile(0.99) ≈ 2.326`).
/// `p ≤ 0` gives −∞, `p ≥ 1` gives +∞, NaN gives NaN.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let v = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 { -v } else { v }
}

/// Horner evaluation, coefficients from the constant term up.
fn poly(c: &[f64; 8], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
}

#[allow(clippy::excessive_precision)] // AS 241's published digits, verbatim for checking.
const A: [f64; 8] = [
    3.387_132_872_796_366_608,
    1.331_416_678_917_843_774_5e2,
    1.971_590_950_306_551_442_7e3,
    1.373_169_376_550_946_112_5e4,
    4.592_195_393_154_987_145_7e4,
    6.726_577_092_700_870_085_3e4,
    3.343_057_558_358_812_810_5e4,
    2.509_080_928_730_122_672_7e3,
];
#[allow(clippy::excessive_precision)] // AS 241's published digits, verbatim for checking.
const B: [f64; 8] = [
    1.0,
    4.231_333_070_160_091_125_2e1,
    6.871_870_074_920_579_083e2,
    5.394_196_021_424_751_107_7e3,
    2.121_379_430_158_659_586_7e4,
    3.930_789_580_009_271_061e4,
    2.872_908_573_572_194_267_4e4,
    5.226_495_278_852_854_561e3,
];
#[allow(clippy::excessive_precision)] // AS 241's published digits, verbatim for checking.
const C: [f64; 8] = [
    1.423_437_110_749_683_577_34,
    4.630_337_846_156_545_295_9,
    5.769_497_221_460_691_405_5,
    3.647_848_324_763_204_605_04,
    1.270_458_252_452_368_382_58,
    2.417_807_251_774_506_117_7e-1,
    2.272_384_498_926_918_458_33e-2,
    7.745_450_142_783_414_076_4e-4,
];
#[allow(clippy::excessive_precision)] // AS 241's published digits, verbatim for checking.
const D: [f64; 8] = [
    1.0,
    2.053_191_626_637_758_821_87,
    1.676_384_830_183_803_849_4,
    6.897_673_349_851_000_045_5e-1,
    1.481_039_764_274_800_745_9e-1,
    1.519_866_656_361_645_719_66e-2,
    5.475_938_084_995_344_946e-4,
    1.050_750_071_644_416_843_24e-9,
];
#[allow(clippy::excessive_precision)] // AS 241's published digits, verbatim for checking.
const E: [f64; 8] = [
    6.657_904_643_501_103_777_2,
    5.463_784_911_164_114_369_9,
    1.784_826_539_917_291_335_8,
    2.965_605_718_285_048_912_3e-1,
    2.653_218_952_657_612_309_3e-2,
    1.242_660_947_388_078_438_6e-3,
    2.711_555_568_743_487_578_15e-5,
    2.010_334_399_292_288_132_65e-7,
];
#[allow(clippy::excessive_precision)] // AS 241's published digits, verbatim for checking.
const F: [f64; 8] = [
    1.0,
    5.998_322_065_558_879_376_9e-1,
    1.369_298_809_227_358_053_1e-1,
    1.487_536_129_085_061_485_25e-2,
    7.868_691_311_456_132_591e-4,
    1.846_318_317_510_054_681_8e-5,
    1.421_511_758_316_445_888_7e-7,
    2.044_263_103_389_939_785_64e-15,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The upper tail 1 − Φ(x), x ≥ 0, by composite Simpson integration of the density over
    /// [x, x + 12] (beyond, the density is negligible): independent of AS 241, and accurate in
    /// relative terms far into the tail.
    fn upper_tail(x: f64) -> f64 {
        let n = 20_000;
        let h = 12.0 / n as f64;
        let phi = |t: f64| (-t * t / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = phi(x) + phi(x + 12.0);
        for i in 1..n {
            s += phi(x + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    }

    #[test]
    fn known_quantiles() {
        for (p, z) in [
            (0.5, 0.0),
            (0.9, 1.281_551_565_544_600_4),
            (0.95, 1.644_853_626_951_472_2),
            (0.975, 1.959_963_984_540_054),
            (0.99, 2.326_347_874_040_840_8),
            (0.995, 2.575_829_303_548_900_4),
            (0.999, 3.090_232_306_167_813_5),
            (1e-10, -6.361_340_902_404_056),
        ] {
            let got = normal_quantile(p);
            assert!(
                (got - z).abs() <= 1e-9 * z.abs().max(1.0),
                "q({p}) = {got}, want {z}"
            );
        }
    }

    #[test]
    fn inverts_the_cdf_in_every_region() {
        // Central region, both tails up to r ≤ 5, and the far tail beyond.
        for p in [
            0.51,
            0.6,
            0.8,
            0.92,
            0.975,
            0.99,
            0.9999,
            0.999_999,
            1.0 - 1e-12,
            1e-12,
            0.3,
            0.07,
        ] {
            let z = normal_quantile(p);
            let want = if p > 0.5 { 1.0 - p } else { p };
            let got = upper_tail(z.abs());
            assert_eq!(z > 0.0, p > 0.5, "p = {p}: z = {z} has the wrong sign");
            assert!(
                (got - want).abs() / want < 1e-8,
                "p = {p}: z = {z}, tail {got}, want {want}"
            );
        }
    }

    #[test]
    fn symmetric_and_edges() {
        for p in [0.01, 0.2, 0.4, 1e-5] {
            assert!(
                (normal_quantile(p) + normal_quantile(1.0 - p)).abs()
                    < 1e-6 * normal_quantile(p).abs().max(1.0)
            );
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(f64::NAN).is_nan());
        assert!(normal_quantile(1e-300) < -37.0);
    }
}
