//! The arithmetic of a run: rates, latency percentiles, and which messages
//! went missing. Kept apart from the sockets so it can be tested exactly.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Events per second over `elapsed`; 0 for an empty interval.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// End-to-end latencies, recorded in nanoseconds with three significant
/// digits from 1 ns to one hour; longer values are clamped to the top.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

const LATENCY_MAX_NS: u64 = 3_600_000_000_000;

impl Default for Latency {
    fn default() -> Latency {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        // Constant bounds that hdrhistogram documents as valid.
        Latency(
            Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3)
                .expect("1 ns to 1 h at 3 digits is a valid histogram"),
        )
    }

    /// Records one latency. A sample from a clock that went backwards
    /// counts as 1 ns rather than being lost.
    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record(ns.clamp(1, LATENCY_MAX_NS));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50, p90, p99, p99.9 and max in microseconds; `None` when empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.0.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            count: self.0.len(),
            min: us(self.0.min()),
            mean: self.0.mean() / 1000.0,
            p50: us(self.0.value_at_quantile(0.50)),
            p90: us(self.0.value_at_quantile(0.90)),
            p99: us(self.0.value_at_quantile(0.99)),
            p999: us(self.0.value_at_quantile(0.999)),
            max: us(self.0.max()),
        })
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// A set of sequence numbers, one bit each: the messages of one publisher
/// that were acknowledged, or that reached one subscriber.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
    /// One past the highest member.
    end: u64,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there (a duplicate).
    pub fn insert(&mut self, seq: u32) -> bool {
        let (word, bit) = (seq as usize / 64, seq % 64);
        if word >= self.words.len() {
            self.words.resize((word + 1).next_power_of_two(), 0);
        }
        let Some(slot) = self.words.get_mut(word) else {
            return false;
        };
        let mask = 1u64 << bit;
        if *slot & mask != 0 {
            return false;
        }
        *slot |= mask;
        self.len += 1;
        self.end = self.end.max(u64::from(seq) + 1);
        true
    }

    pub fn contains(&self, seq: u32) -> bool {
        self.words
            .get(seq as usize / 64)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Numbers below the highest member that are not members: what a
    /// subscriber missed of a stream it saw continue past them.
    pub fn gaps(&self) -> u64 {
        self.end - self.len
    }

    /// Members of `self` that are not members of `other`: acknowledged
    /// messages a subscriber never got.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

/// What one subscriber received, by publisher.
#[derive(Debug, Default)]
pub struct Receipts {
    /// Indexed by the stamp's publisher number.
    pub by_publisher: Vec<SeqSet>,
    /// Messages seen again (QoS 1 resends, or a broker's duplicate).
    pub duplicates: u64,
    /// Messages older than one already seen from the same publisher.
    pub out_of_order: u64,
    /// Messages without a stamp (too short, or not from a bench).
    pub unstamped: u64,
    last_seq: Vec<Option<u32>>,
    /// Publisher numbers above this are counted, not tracked, to bound
    /// memory against stamps that are not ours.
    max_publishers: usize,
}

impl Receipts {
    pub fn new(max_publishers: usize) -> Receipts {
        Receipts {
            max_publishers,
            ..Receipts::default()
        }
    }

    /// Records one received stamp.
    pub fn record(&mut self, publisher: u32, seq: u32) {
        let p = publisher as usize;
        if p >= self.max_publishers {
            self.unstamped += 1;
            return;
        }
        if p >= self.by_publisher.len() {
            self.by_publisher.resize_with(p + 1, SeqSet::default);
            self.last_seq.resize(p + 1, None);
        }
        let (Some(set), Some(last)) = (self.by_publisher.get_mut(p), self.last_seq.get_mut(p))
        else {
            return;
        };
        if !set.insert(seq) {
            self.duplicates += 1;
        } else if last.is_some_and(|l| seq < l) {
            self.out_of_order += 1;
        }
        *last = Some(last.map_or(seq, |l| l.max(seq)));
    }

    /// Distinct messages received.
    pub fn distinct(&self) -> u64 {
        self.by_publisher.iter().map(SeqSet::len).sum()
    }

    /// Messages missing inside each publisher's received range.
    pub fn gaps(&self) -> u64 {
        self.by_publisher.iter().map(SeqSet::gaps).sum()
    }

    /// Acknowledged messages (by publisher) that never arrived here.
    pub fn lost(&self, acked: &[SeqSet]) -> u64 {
        let empty = SeqSet::default();
        acked
            .iter()
            .enumerate()
            .map(|(p, a)| a.missing_from(self.by_publisher.get(p).unwrap_or(&empty)))
            .sum()
    }
}

/// Resident memory of a process in bytes, from `/proc` (Linux); `None`
/// when it cannot be read.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates() {
        assert_eq!(rate(1000, Duration::from_millis(500)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        // 1..=1000 µs, one sample each.
        for us in 1..=1000u64 {
            l.record_ns(us * 1000);
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 1000);
        // Three significant digits: within 0.1%.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(near(s.p50, 500.0), "p50 {}", s.p50);
        assert!(near(s.p90, 900.0), "p90 {}", s.p90);
        assert!(near(s.p99, 990.0), "p99 {}", s.p99);
        assert!(near(s.p999, 999.0), "p99.9 {}", s.p999);
        assert!(near(s.max, 1000.0), "max {}", s.max);
        assert!(near(s.min, 1.0), "min {}", s.min);
        assert!(near(s.mean, 500.5), "mean {}", s.mean);
        assert!(Latency::new().summary().is_none());
    }

    #[test]
    fn merged_histograms_count_both() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        a.record_ns(1_000);
        b.record_ns(3_000_000);
        b.record_ns(0); // a clock step backwards still counts
        a.merge(&b);
        let s = a.summary().unwrap();
        assert_eq!(s.count, 3);
        assert!((s.max - 3000.0).abs() < 3.0);
    }

    #[test]
    fn loss_is_acknowledged_minus_received() {
        let mut acked = SeqSet::default();
        for seq in 0..100 {
            acked.insert(seq);
        }
        let mut r = Receipts::new(16);
        for seq in (0..100).filter(|s| s % 10 != 3) {
            r.record(0, seq);
        }
        // Messages that were received but never acknowledged (the
        // acknowledgement was still in flight) are not loss.
        r.record(0, 150);
        assert_eq!(r.lost(std::slice::from_ref(&acked)), 10);
        assert_eq!(r.distinct(), 91);
        // 0..=150 has 151 numbers, 91 of them seen.
        assert_eq!(r.gaps(), 60);
        // A publisher we never heard from: everything it had acked is lost.
        let mut other = SeqSet::default();
        other.insert(0);
        other.insert(1);
        assert_eq!(r.lost(&[acked, other]), 12);
    }

    #[test]
    fn duplicates_and_reordering_are_counted_not_double_counted() {
        let mut r = Receipts::new(4);
        for seq in [0, 1, 2, 2, 5, 3, 4, 1] {
            r.record(1, seq);
        }
        assert_eq!(r.distinct(), 6);
        assert_eq!(r.duplicates, 2);
        assert_eq!(r.out_of_order, 2);
        assert_eq!(r.gaps(), 0);
        r.record(9, 0);
        assert_eq!(r.unstamped, 1);
    }

    proptest! {
        #[test]
        fn seqset_matches_a_btreeset(seqs in proptest::collection::vec(0u32..5000, 0..300),
                                     others in proptest::collection::vec(0u32..5000, 0..300)) {
            let mut model = std::collections::BTreeSet::new();
            let mut set = SeqSet::default();
            for s in &seqs {
                prop_assert_eq!(set.insert(*s), model.insert(*s));
            }
            prop_assert_eq!(set.len(), model.len() as u64);
            let end = model.iter().next_back().map_or(0, |m| u64::from(*m) + 1);
            prop_assert_eq!(set.gaps(), end - model.len() as u64);
            let mut other_model = std::collections::BTreeSet::new();
            let mut other = SeqSet::default();
            for s in &others {
                other.insert(*s);
                other_model.insert(*s);
            }
            prop_assert_eq!(set.missing_from(&other), model.difference(&other_model).count() as u64);
            for s in 0..5000u32 {
                prop_assert_eq!(set.contains(s), model.contains(&s));
            }
        }
    }
}
