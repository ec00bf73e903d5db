//! Fixed-size sketches an endpoint keeps instead of raw samples: a log-bucket latency
//! histogram (quantiles within a stated relative error) and a HyperLogLog of identities
//! (distinct callers without keeping who they were). Both merge, so endpoints can be merged
//! when a position collapses into a parameter.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Buckets per doubling of latency: bucket bounds are 2^(1/4) ≈ 19% apart, so a quantile
/// read at a bucket's middle is within about 10% of the true value.
const SUB_BUCKETS: u32 = 4;
const SUB_BITS: u32 = 2;
/// Doublings above 1 µs covered: 2^40 µs is about 12 days; slower answers count as that.
const OCTAVES: u32 = 40;
pub const LATENCY_BUCKETS: usize = ((OCTAVES + 1) * SUB_BUCKETS) as usize;

/// Upstream latencies in microseconds, in log buckets. Storage grows only up to the slowest
/// bucket seen, never past [`LATENCY_BUCKETS`] counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
}

fn bucket_of(micros: u64) -> usize {
    let v = micros.max(1);
    let log = 63 - v.leading_zeros();
    if log > OCTAVES {
        return LATENCY_BUCKETS - 1;
    }
    let mask = u64::from(SUB_BUCKETS - 1);
    let sub = if log >= SUB_BITS {
        (v >> (log - SUB_BITS)) & mask
    } else {
        (v << (SUB_BITS - log)) & mask
    };
    (log * SUB_BUCKETS) as usize + sub as usize
}

/// The middle of a bucket, in microseconds.
fn bucket_mid(index: usize) -> f64 {
    let octave = index as u32 / SUB_BUCKETS;
    let sub = index as u32 % SUB_BUCKETS;
    let low = 2f64.powi(octave as i32);
    let width = low / f64::from(SUB_BUCKETS);
    low + width * (f64::from(sub) + 0.5)
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let at = bucket_of(micros);
        if self.counts.len() <= at {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add(1);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1), `None` before any sample.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the q-quantile sample, 1-based, as a nearest-rank definition.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos((bucket_mid(i) * 1000.0) as u64));
            }
        }
        None
    }

    pub fn merge(&mut self, other: &Self) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * size_of::<u64>()
    }

    /// Checks a histogram read back from disk.
    pub fn check(&self) -> Result<(), String> {
        if self.counts.len() > LATENCY_BUCKETS {
            return Err(format!(
                "a latency histogram has more than {LATENCY_BUCKETS} buckets"
            ));
        }
        Ok(())
    }
}

/// Register-index bits: 2^10 registers of one byte, a standard error of 1.04/√1024 ≈ 3.3%.
const HLL_BITS: u32 = 10;
const HLL_REGISTERS: usize = 1 << HLL_BITS;
/// The largest register value: leading zeros of the remaining 54 bits, plus one.
const HLL_MAX_RANK: u8 = (64 - HLL_BITS + 1) as u8;

/// A HyperLogLog of distinct identities. Registers are allocated on the first identity, so
/// anonymous endpoints cost nothing; saved as base64.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hll {
    registers: Option<Box<[u8]>>,
}

/// A 64-bit hash that stays the same across builds and restarts (a saved sketch must keep
/// meaning the same thing): FNV-1a over the bytes, then the murmur3 finaliser to spread the
/// bits FNV leaves weak. Identities are authenticated names, not attacker-chosen at will.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Hll {
    pub fn insert(&mut self, item: &[u8]) {
        let h = stable_hash(item);
        let index = (h >> (64 - HLL_BITS)) as usize;
        let rest = h << HLL_BITS;
        let rank = (rest.leading_zeros() + 1).min(u32::from(HLL_MAX_RANK)) as u8;
        let registers = self
            .registers
            .get_or_insert_with(|| vec![0u8; HLL_REGISTERS].into_boxed_slice());
        registers[index] = registers[index].max(rank);
    }

    /// The estimated number of distinct items, with linear counting for small sets.
    pub fn estimate(&self) -> u64 {
        let Some(registers) = &self.registers else {
            return 0;
        };
        let m = HLL_REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
        let raw = alpha * m * m / sum;
        let zeros = registers.iter().filter(|&&r| r == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    pub fn merge(&mut self, other: &Self) {
        let Some(theirs) = &other.registers else {
            return;
        };
        match &mut self.registers {
            Some(mine) => {
                for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                    *m = (*m).max(*t);
                }
            }
            None => self.registers = Some(theirs.clone()),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.registers.as_ref().map_or(0, |r| r.len())
    }
}

impl Serialize for Hll {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self
            .registers
            .as_ref()
            .map(|r| base64::engine::general_purpose::STANDARD.encode(r));
        text.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hll {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(Self::default());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(D::Error::custom)?;
        if bytes.len() != HLL_REGISTERS || bytes.iter().any(|&r| r > HLL_MAX_RANK) {
            return Err(D::Error::custom(format!(
                "an identity sketch must hold {HLL_REGISTERS} registers of at most {HLL_MAX_RANK}"
            )));
        }
        Ok(Self {
            registers: Some(bytes.into_boxed_slice()),
        })
    }
}
