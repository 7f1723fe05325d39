//! Which key each request uses: uniform or zipf over `0..key_space`, and the
//! deterministic value that belongs to each key.
//!
//! The random source is a seeded SplitMix64, so a run is reproducible per
//! connection and costs no locking. The zipf sampler is rejection-inversion
//! (Hörmann & Derflinger, 1996), as in Apache Commons RNG: O(1) memory and
//! O(1) expected time for any key space, so ten million keys need no table.

use bytes::Bytes;

/// SplitMix64: tiny, fast, statistically fine for load generation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-32 for any
    /// key space a benchmark uses). `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// SplitMix64's finaliser: a good 64-bit hash of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// How keys are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyPattern {
    Uniform,
    /// Rank `k` (0 = most popular) is drawn with probability ∝ 1/(k+1)^exponent.
    Zipf {
        exponent: f64,
    },
}

/// Draws key indexes in `0..key_space`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform { n: u64 },
    Zipf(Zipf),
}

impl KeyChooser {
    /// `key_space` must be at least 1; a zipf exponent must be positive.
    pub fn new(pattern: KeyPattern, key_space: u64) -> KeyChooser {
        let n = key_space.max(1);
        match pattern {
            KeyPattern::Uniform => KeyChooser::Uniform { n },
            KeyPattern::Zipf { exponent } => KeyChooser::Zipf(Zipf::new(n, exponent)),
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { n } => rng.below(*n),
            KeyChooser::Zipf(z) => z.sample(rng) - 1,
        }
    }
}

/// Zipf over ranks `1..=n` by rejection-inversion.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

/// Rejection almost never happens twice in a row (acceptance is above 90%
/// for every exponent); this only bounds the loop.
const MAX_REJECTIONS: usize = 64;

impl Zipf {
    pub fn new(n: u64, exponent: f64) -> Zipf {
        let n = n.max(1);
        let exponent = if exponent.is_finite() && exponent > 0.0 {
            exponent
        } else {
            1.0
        };
        let h_integral_x1 = h_integral(1.5, exponent) - 1.0;
        let h_integral_n = h_integral(n as f64 + 0.5, exponent);
        let s = 2.0 - h_integral_inverse(h_integral(2.5, exponent) - h(2.0, exponent), exponent);
        Zipf {
            n,
            exponent,
            h_integral_x1,
            h_integral_n,
            s,
        }
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let mut k = 1;
        for _ in 0..MAX_REJECTIONS {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = h_integral_inverse(u, self.exponent);
            k = ((x + 0.5) as u64).clamp(1, self.n);
            let kf = k as f64;
            if kf - x <= self.s || u >= h_integral(kf + 0.5, self.exponent) - h(kf, self.exponent) {
                return k;
            }
        }
        k
    }
}

fn h(x: f64, exponent: f64) -> f64 {
    (-exponent * x.ln()).exp()
}

fn h_integral(x: f64, exponent: f64) -> f64 {
    let log_x = x.ln();
    helper2((1.0 - exponent) * log_x) * log_x
}

fn h_integral_inverse(x: f64, exponent: f64) -> f64 {
    let t = (x * (1.0 - exponent)).max(-1.0);
    (helper1(t) * x).exp()
}

/// ln(1+x)/x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x − 1)/x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

/// The key for index `i`.
pub fn key(i: u64) -> Bytes {
    Bytes::from(format!("memgate-bench:{i}"))
}

/// Every key's value, derived from its index alone, so any reader can verify
/// what any writer stored: a size in `min..=max` and a slice of a shared
/// pseudo-random pool of printable bytes.
#[derive(Clone, Debug)]
pub struct Values {
    pool: Bytes,
    min: usize,
    max: usize,
}

/// Distinct starting offsets into the pool.
const POOL_OFFSETS: usize = 4096;

impl Values {
    pub fn new(min: usize, max: usize) -> Values {
        let max = max.max(min);
        let mut rng = Rng::new(0x006d_656d_6761_7465);
        let pool: Vec<u8> = (0..max + POOL_OFFSETS)
            .map(|_| b'!' + (rng.below(94) as u8))
            .collect();
        Values {
            pool: Bytes::from(pool),
            min,
            max,
        }
    }

    /// The value of key `i` (zero-copy).
    pub fn get(&self, i: u64) -> Bytes {
        let h = mix(i ^ 0x5bd1_e995);
        let span = (self.max - self.min) as u64 + 1;
        let len = self.min + (h % span) as usize;
        let offset = ((h >> 32) % POOL_OFFSETS as u64) as usize;
        self.pool.slice(offset..offset + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_covers_it() {
        let chooser = KeyChooser::new(KeyPattern::Uniform, 10);
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let k = chooser.next(&mut rng);
            assert!(k < 10);
            seen[k as usize] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn zipf_stays_in_range() {
        for (n, exponent) in [(1, 0.99), (2, 0.5), (1000, 0.99), (1000, 1.0), (50, 2.5)] {
            let chooser = KeyChooser::new(KeyPattern::Zipf { exponent }, n);
            let mut rng = Rng::new(n ^ 7);
            for _ in 0..20_000 {
                assert!(chooser.next(&mut rng) < n);
            }
        }
    }

    #[test]
    fn zipf_is_skewed_as_the_law_says() {
        // With exponent 1 over 1000 ranks, P(rank 1) = 1/H(1000) ≈ 0.1336 and
        // P(rank 2) is half that; the top 10 ranks carry about 39%.
        let n = 1000;
        let z = Zipf::new(n, 1.0);
        let mut rng = Rng::new(42);
        let draws = 200_000;
        let mut counts = vec![0u32; n as usize + 1];
        for _ in 0..draws {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        assert_eq!(counts[0], 0, "rank 0 is never drawn");
        let p1 = f64::from(counts[1]) / draws as f64;
        let p2 = f64::from(counts[2]) / draws as f64;
        let top10: u32 = counts[1..=10].iter().sum();
        let top10 = f64::from(top10) / draws as f64;
        assert!((p1 - 0.1336).abs() < 0.005, "p1 = {p1}");
        assert!((p1 / p2 - 2.0).abs() < 0.1, "p1/p2 = {}", p1 / p2);
        assert!((top10 - 0.392).abs() < 0.01, "top10 = {top10}");
        // Monotone on average: the first decile beats the last by far.
        let head: u32 = counts[1..=100].iter().sum();
        let tail: u32 = counts[901..=1000].iter().sum();
        assert!(head > 20 * tail, "head {head}, tail {tail}");
    }

    #[test]
    fn zipf_with_small_exponent_is_flatter() {
        let mut rng = Rng::new(3);
        let steep = Zipf::new(1000, 1.2);
        let flat = Zipf::new(1000, 0.3);
        let first = |z: &Zipf, rng: &mut Rng| (0..50_000).filter(|_| z.sample(rng) == 1).count();
        assert!(first(&steep, &mut rng) > 5 * first(&flat, &mut rng));
    }

    #[test]
    fn values_are_deterministic_and_sized() {
        let values = Values::new(10, 20);
        let again = Values::new(10, 20);
        for i in 0..1000 {
            let v = values.get(i);
            assert!((10..=20).contains(&v.len()));
            assert_eq!(v, again.get(i));
            assert!(v.iter().all(|b| b.is_ascii_graphic()));
        }
        assert_ne!(values.get(1), values.get(2));
        let fixed = Values::new(32, 32);
        assert!((0..100).all(|i| fixed.get(i).len() == 32));
    }

    #[test]
    fn keys_are_distinct() {
        assert_eq!(&key(7)[..], b"memgate-bench:7");
        assert_ne!(key(1), key(10));
    }
}
