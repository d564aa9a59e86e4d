//! YCSB core workloads: operation mixes, key naming and key choosers,
//! written from the facts in `shared/design/ycsb.md`.
//!
//! Everything here is deterministic given a seed, so a run can be replayed.

/// An operation of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Read one key.
    Read,
    /// Overwrite one existing key.
    Update,
    /// Write a new key.
    Insert,
    /// Read a key, then write it back with the read's context.
    ReadModifyWrite,
}

impl Op {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::ReadModifyWrite => "rmw",
        }
    }
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// Scrambled Zipfian, constant 0.99.
    Zipfian,
    /// Skewed towards the most recently inserted keys.
    Latest,
    /// Every key equally likely.
    Uniform,
}

/// The YCSB core workloads (E, scans, does not apply to a key-value API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// 50% read, 50% update (session store).
    A,
    /// 95% read, 5% update (photo tagging).
    B,
    /// 100% read (profile cache).
    C,
    /// 95% read, 5% insert, latest distribution (status updates).
    D,
    /// 50% read, 50% read-modify-write (user database).
    F,
}

impl Workload {
    /// The operation mix, as (operation, proportion).
    pub fn mix(self) -> &'static [(Op, f64)] {
        match self {
            Workload::A => &[(Op::Read, 0.5), (Op::Update, 0.5)],
            Workload::B => &[(Op::Read, 0.95), (Op::Update, 0.05)],
            Workload::C => &[(Op::Read, 1.0)],
            Workload::D => &[(Op::Read, 0.95), (Op::Insert, 0.05)],
            Workload::F => &[(Op::Read, 0.5), (Op::ReadModifyWrite, 0.5)],
        }
    }

    /// YCSB's request distribution for the workload.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }

    /// Its letter.
    pub fn letter(self) -> char {
        match self {
            Workload::A => 'A',
            Workload::B => 'B',
            Workload::C => 'C',
            Workload::D => 'D',
            Workload::F => 'F',
        }
    }
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 1_099_511_628_211;

/// YCSB's 64-bit FNV-1a over the 8 bytes of `v`, low byte first; the
/// absolute value of the result read as a signed number.
pub fn fnv_hash64(mut v: u64) -> u64 {
    let mut h = FNV_OFFSET;
    for _ in 0..8 {
        h ^= v & 0xff;
        h = h.wrapping_mul(FNV_PRIME);
        v >>= 8;
    }
    (h as i64).unsigned_abs()
}

/// The key of record number `n`: `"user"` and the hash of `n`.
pub fn key_name(n: u64) -> String {
    format!("user{}", fnv_hash64(n))
}

/// A small, fast, seeded generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Zipfian generator over `0..n` (Gray et al., "Quickly generating
/// billion-record synthetic databases"), with ζ(n) kept incrementally so
/// that `n` can grow (the `latest` distribution).
#[derive(Debug, Clone)]
pub struct Zipfian {
    theta: f64,
    n: u64,
    zeta_n: f64,
    zeta2: f64,
    alpha: f64,
    eta: f64,
}

/// ζ(n, θ) = Σ_{i=1..n} i^-θ: exact up to a million terms, then the
/// Euler–Maclaurin tail (error far below what matters here).
pub fn zeta(n: u64, theta: f64) -> f64 {
    const EXACT: u64 = 1_000_000;
    let m = n.min(EXACT);
    let mut s: f64 = (1..=m).map(|i| (i as f64).powf(-theta)).sum();
    if n > m {
        let (a, b) = (m as f64, n as f64);
        s += (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta)
            + (b.powf(-theta) - a.powf(-theta)) / 2.0;
    }
    s
}

impl Zipfian {
    /// YCSB's constant.
    pub const THETA: f64 = 0.99;

    /// A generator over `0..n`.
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let n = n.max(1);
        let mut z = Zipfian {
            theta,
            n,
            zeta_n: zeta(n, theta),
            zeta2: zeta(2, theta),
            alpha: 1.0 / (1.0 - theta),
            eta: 0.0,
        };
        z.set_eta();
        z
    }

    fn set_eta(&mut self) {
        self.eta =
            (1.0 - (2.0 / self.n as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zeta_n);
    }

    /// Grows the item count to `n` (adds the new terms of ζ).
    pub fn grow(&mut self, n: u64) {
        if n <= self.n {
            return;
        }
        if n - self.n > 1_000_000 {
            self.zeta_n = zeta(n, self.theta);
        } else {
            self.zeta_n += ((self.n + 1)..=n)
                .map(|i| (i as f64).powf(-self.theta))
                .sum::<f64>();
        }
        self.n = n;
        self.set_eta();
    }

    /// A draw in `0..n`; item 0 is the most popular.
    pub fn sample(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let v = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.n - 1)
    }
}

/// The item space of the scrambled Zipfian (YCSB draws over ten billion
/// items, then hashes the draw into the record count).
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;

/// Chooses record numbers for one client.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    dist: Distribution,
    zipf: Zipfian,
}

impl KeyChooser {
    /// A chooser over `records` records.
    pub fn new(dist: Distribution, records: u64) -> KeyChooser {
        let zipf = match dist {
            Distribution::Zipfian => Zipfian::new(SCRAMBLED_ITEMS, Zipfian::THETA),
            _ => Zipfian::new(records, Zipfian::THETA),
        };
        KeyChooser { dist, zipf }
    }

    /// A record number below `inserted` (the records that exist now).
    pub fn next(&mut self, rng: &mut Rng, inserted: u64) -> u64 {
        let inserted = inserted.max(1);
        match self.dist {
            Distribution::Uniform => rng.next_u64() % inserted,
            Distribution::Zipfian => fnv_hash64(self.zipf.sample(rng.unit())) % inserted,
            Distribution::Latest => {
                self.zipf.grow(inserted);
                let back = self.zipf.sample(rng.unit()).min(inserted - 1);
                inserted - 1 - back
            }
        }
    }
}

/// Picks the next operation of a mix.
pub fn pick(mix: &[(Op, f64)], u: f64) -> Op {
    let mut acc = 0.0;
    for &(op, p) in mix {
        acc += p;
        if u < acc {
            return op;
        }
    }
    mix.last().map_or(Op::Read, |&(op, _)| op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_ycsb_naming() {
        // FNV-1a over the 8 little-endian bytes of 0: all-zero octets.
        let mut h = FNV_OFFSET;
        for _ in 0..8 {
            h = h.wrapping_mul(FNV_PRIME);
        }
        assert_eq!(fnv_hash64(0), (h as i64).unsigned_abs());
        assert!(key_name(42).starts_with("user"));
        assert_ne!(key_name(1), key_name(2));
    }

    #[test]
    fn mixes_sum_to_one_and_pick_in_proportion() {
        let mut rng = Rng::new(7);
        for w in [
            Workload::A,
            Workload::B,
            Workload::C,
            Workload::D,
            Workload::F,
        ] {
            let total: f64 = w.mix().iter().map(|(_, p)| p).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
        let n = 100_000;
        let reads = (0..n)
            .filter(|_| pick(Workload::B.mix(), rng.unit()) == Op::Read)
            .count();
        let share = reads as f64 / n as f64;
        assert!((share - 0.95).abs() < 0.01, "{share}");
    }

    #[test]
    fn zeta_tail_matches_the_exact_sum() {
        let exact: f64 = (1..=3_000_000u64).map(|i| (i as f64).powf(-0.99)).sum();
        let approx = zeta(3_000_000, 0.99);
        assert!((exact - approx).abs() / exact < 1e-9, "{exact} vs {approx}");
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let z = Zipfian::new(1000, Zipfian::THETA);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[z.sample(rng.unit()) as usize] += 1;
        }
        // Item 0 is the most popular, and the top 10% of items draw most.
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
        let top: u32 = counts[..100].iter().sum();
        assert!(top as f64 / 200_000.0 > 0.6, "{top}");
        let mut grown = z.clone();
        grown.grow(2000);
        assert!((grown.zeta_n - zeta(2000, Zipfian::THETA)).abs() < 1e-9);
    }

    #[test]
    fn scrambled_zipfian_spreads_hot_keys_and_latest_favours_new_ones() {
        let mut rng = Rng::new(3);
        let mut z = KeyChooser::new(Distribution::Zipfian, 10_000);
        let draws: Vec<u64> = (0..50_000).map(|_| z.next(&mut rng, 10_000)).collect();
        assert!(draws.iter().all(|&k| k < 10_000));
        let mut counts = std::collections::HashMap::new();
        for d in &draws {
            *counts.entry(*d).or_insert(0u32) += 1;
        }
        let hottest = counts
            .iter()
            .max_by_key(|(_, c)| **c)
            .map(|(k, _)| *k)
            .unwrap_or(0);
        assert_ne!(hottest, 0, "scrambled: the hot key is not record 0");
        let mut l = KeyChooser::new(Distribution::Latest, 1000);
        let recent = (0..10_000)
            .filter(|_| l.next(&mut rng, 1000) >= 900)
            .count();
        assert!(recent > 5000, "{recent}");
    }
}
