//! What a batch's replies count: hits, misses, writes and errors per tier and prefix,
//! and latency per tier. Gathered in a `Tally` while `reply` cuts the replies, and added
//! to the shared counters once per batch.

use bytes::Bytes;

use super::{Account, AccountKeys, Elements, Note};
use crate::resp::frames::{Shares, array_elements, element_slices, is_error};
use crate::stats::{Outcome, Stats};
use crate::tier::Class;
use crate::tier::plan::Role;

/// What one batch's replies count, gathered here and added to the shared counters once
/// per batch: one atomic add per (class, outcome) and one histogram lock per batch,
/// instead of one per key.
#[derive(Default)]
pub(super) struct Tally {
    /// `((class, outcome), count)`.
    outcomes: smallvec::SmallVec<[((Class, Outcome), u64); 4]>,
    /// Latency samples `((tier, micros), count)`.
    latency: smallvec::SmallVec<[((u16, u64), u64); 4]>,
}

impl Tally {
    pub(super) fn count(&mut self, class: Class, outcome: Outcome) {
        self.count_n(class, outcome, 1);
    }

    fn count_n(&mut self, class: Class, outcome: Outcome, times: u64) {
        add(&mut self.outcomes, (class, outcome), times);
    }

    fn sample(&mut self, tier: u16, micros: u64) {
        self.sample_n(tier, micros, 1);
    }

    fn sample_n(&mut self, tier: u16, micros: u64, times: u64) {
        add(&mut self.latency, (tier, micros), times);
    }

    pub(super) fn flush(self, stats: &Stats) {
        for ((class, outcome), n) in self.outcomes {
            stats.record_n(class, outcome, n);
        }
        let latency: smallvec::SmallVec<[(u16, u64, u64); 4]> =
            self.latency.into_iter().map(|((tier, micros), n)| (tier, micros, n)).collect();
        stats.record_latencies(&latency);
    }
}

/// Adds `times` to `key`'s count: a batch has a few distinct keys, so a short list beats
/// a map.
fn add<K: PartialEq>(counts: &mut smallvec::SmallVec<[(K, u64); 4]>, key: K, times: u64) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += times,
        None => counts.push((key, times)),
    }
}

/// Counts the replies of notes that need no cutting, where they lie in the batch's bytes.
pub(super) fn account_in_place(bytes: &[u8], ends: &[u32], notes: &[Note], micros: u64, tally: &mut Tally) {
    let mut shares = Shares::new(bytes, ends);
    for note in notes {
        let Some(account) = &note.account else {
            if shares.next(note.upstream_frames()).is_none() {
                return;
            }
            continue;
        };
        match (&account.keys, account.elements) {
            (&AccountKeys::First(class, role), Elements::Whole) if note.repeat > 1 => {
                // A repeated note (a pipeline of GETs on one prefix): outcomes are added
                // up here and reach the tally once.
                let (mut outcomes, mut replies) = ([0u64; 4], 0);
                let complete = (0..note.repeat).all(|_| match shares.next(note.frames) {
                    Some(reply) => {
                        if let Some(outcome) = outcome_one(reply, account, role) {
                            outcomes[outcome as usize] += 1;
                        }
                        replies += 1;
                        true
                    }
                    None => false,
                });
                for (outcome, n) in OUTCOMES.into_iter().zip(outcomes) {
                    if n > 0 {
                        tally.count_n(class, outcome, n);
                    }
                }
                if replies > 0 {
                    tally.sample_n(class.tier, micros, replies);
                }
                if !complete {
                    return;
                }
            }
            _ => {
                for _ in 0..note.repeat {
                    let Some(reply) = shares.next(note.frames) else { return };
                    record(tally, reply, account, micros);
                }
            }
        }
    }
}

/// Every outcome, in `Outcome as usize` order.
const OUTCOMES: [Outcome; 4] = [Outcome::Hit, Outcome::Miss, Outcome::Write, Outcome::Error];

/// A nil or an empty collection: the read found nothing.
fn is_missing(frame: &[u8]) -> bool {
    matches!(frame, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n" | b"*0\r\n" | b"%0\r\n" | b"~0\r\n")
}

/// Counts one request's outcome per key, and its latency (`micros`) once per tier.
#[inline]
pub(super) fn record(tally: &mut Tally, reply: &[u8], account: &Account, micros: u64) {
    match (&account.keys, account.elements) {
        (&AccountKeys::First(class, role), Elements::Whole) => {
            record_one(tally, reply, account, class, role, micros)
        }
        _ => record_keys(tally, reply, account, micros),
    }
}

/// `record` for the usual request: one key, answered by the whole reply.
fn record_one(tally: &mut Tally, reply: &[u8], account: &Account, class: Class, role: Role, micros: u64) {
    if let Some(outcome) = outcome_one(reply, account, role) {
        tally.count(class, outcome);
    }
    tally.sample(class.tier, micros);
}

/// The outcome of a one-key request's reply; `None` for a key neither read nor written.
#[inline]
fn outcome_one(reply: &[u8], account: &Account, role: Role) -> Option<Outcome> {
    match role {
        _ if is_error(reply) => Some(Outcome::Error),
        Role::Write => Some(Outcome::Write),
        Role::Read if found_value(reply, account.zero_is_miss) => Some(Outcome::Hit),
        Role::Read => Some(Outcome::Miss),
        Role::Other => None,
    }
}

/// `record` for several keys, or replies whose elements answer per key or field.
fn record_keys(tally: &mut Tally, reply: &[u8], account: &Account, micros: u64) {
    let error = is_error(reply);
    let elements = match account.elements {
        Elements::Whole => None,
        _ if error => None,
        _ => element_slices(reply),
    };
    for (class, role, index) in account.keys.iter() {
        match (role, error) {
            (_, true) => tally.count(class, Outcome::Error),
            (Role::Write, false) => tally.count(class, Outcome::Write),
            (Role::Read, false) => match (&elements, account.elements) {
                (Some(items), Elements::PerKey) => {
                    let found = items.get((index as usize).saturating_sub(1)).is_some_and(|e| !is_missing(e));
                    tally.count(class, if found { Outcome::Hit } else { Outcome::Miss });
                }
                (Some(items), _) => {
                    for item in items {
                        tally.count(
                            class,
                            if found_value(item, false) { Outcome::Hit } else { Outcome::Miss },
                        );
                    }
                }
                (None, _) => {
                    let found = found_value(reply, account.zero_is_miss);
                    tally.count(class, if found { Outcome::Hit } else { Outcome::Miss });
                }
            },
            (Role::Other, false) => {}
        }
    }
    let mut seen = 0u64;
    for (class, _, _) in account.keys.iter() {
        // Tier ids beyond 63 share a bit; an extra latency sample is harmless.
        let bit = 1u64 << (class.tier % 64);
        if seen & bit == 0 {
            seen |= bit;
            tally.sample(class.tier, micros);
        }
    }
}

/// Counts each queued command of a transaction by its element of EXEC's array (an
/// aborted transaction, nil or EXECABORT, executed nothing and counts nothing).
pub(super) fn record_exec(tally: &mut Tally, exec: &Bytes, queued: &[Option<Account>], micros: u64) {
    let Some(elements) = array_elements(exec) else { return };
    if elements.len() != queued.len() {
        return;
    }
    for (element, account) in elements.iter().zip(queued) {
        if let Some(account) = account {
            record(tally, element, account, micros);
        }
    }
}

fn found_value(frame: &[u8], zero_is_miss: bool) -> bool {
    !(is_missing(frame) || zero_is_miss && frame == b":0\r\n")
}
