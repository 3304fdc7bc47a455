//! Per-worker counters: one flat array of slots, written by its worker only.
//!
//! The worker counts in plain integers ([`LocalCounters`]) and publishes them with relaxed
//! stores ([`LocalCounters::publish`]); the endpoint reads the shared block
//! ([`WorkerCounters`]) when scraped. Every slot's position is a constant or comes from a typed
//! [`Label`], so the packet path does no lookup and cannot write outside the array.

use std::sync::atomic::{AtomicU64, Ordering};

use super::labels::{DnsEvent, Label};
use crate::pipeline::DropReason;
use crate::record::{Disposition, Reason, RecordAction};

// Fixed slots.
pub(super) const FWD_PACKETS: usize = 0;
pub(super) const FWD_BYTES: usize = 1;
pub(super) const TX_PACKETS: usize = 2;
pub(super) const TX_BYTES: usize = 3;
pub(super) const HELD_PACKETS: usize = 4;
pub(super) const TUN_READ_ERRORS: usize = 5;
pub(super) const TUN_WRITE_ERRORS: usize = 6;
pub(super) const ACTIVE_FLOWS: usize = 7;
pub(super) const HELD_BYTES: usize = 8;
pub(super) const FLOW_LIMIT_REFUSALS: usize = 9;
pub(super) const FLOW_CAPACITY: usize = 10;
pub(super) const FLOW_EVICTIONS: usize = 11;
const FIXED: usize = 12;

// Labelled families, each a dense block after the fixed slots.
const DROP_LABELS: usize = <DropReason as Label>::VALUES.len();
const ACTION_LABELS: usize = <RecordAction as Label>::VALUES.len();
const DISPOSITION_LABELS: usize = <Disposition as Label>::VALUES.len();
const REASON_LABELS: usize = <Reason as Label>::VALUES.len();
const DROPPED_PACKETS: usize = FIXED;
const DROPPED_BYTES: usize = DROPPED_PACKETS + DROP_LABELS;
const DECISIONS: usize = DROPPED_BYTES + DROP_LABELS;
/// Number of slots in a block.
const DNS_EVENTS: usize = DECISIONS + ACTION_LABELS * DISPOSITION_LABELS * REASON_LABELS;
const DNS_EVENT_LABELS: usize = <DnsEvent as Label>::VALUES.len();
const SLOTS: usize = DNS_EVENTS + DNS_EVENT_LABELS;

/// Slot of a DNS check event.
pub(super) const fn dns_event(event: usize) -> usize {
    DNS_EVENTS + event
}

/// Slot of the dropped-packets counter of drop label `reason` (an index into its values).
pub(super) const fn dropped_packets(reason: usize) -> usize {
    DROPPED_PACKETS + reason
}

/// Slot of the dropped-bytes counter of drop label `reason`.
pub(super) const fn dropped_bytes(reason: usize) -> usize {
    DROPPED_BYTES + reason
}

/// Slot of the decision counter for these label indices.
pub(super) const fn decision(action: usize, disposition: usize, reason: usize) -> usize {
    DECISIONS + (action * DISPOSITION_LABELS + disposition) * REASON_LABELS + reason
}

/// What a worker's flow table looks like now (gauges) and what it did so far (counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTableState {
    pub active: u64,
    pub held_bytes: u64,
    pub flow_limit_refusals: u64,
    /// Half-open flows evicted to make room (early drop).
    pub evictions: u64,
    pub capacity: u64,
}

/// Counters of one worker; written by that worker only.
#[derive(Debug)]
pub struct WorkerCounters {
    values: Box<[AtomicU64; SLOTS]>,
}

/// The worker's private tally, published with [`LocalCounters::publish`].
#[derive(Debug, Clone)]
pub struct LocalCounters {
    values: Box<[u64; SLOTS]>,
}

impl LocalCounters {
    pub fn forwarded(&mut self, bytes: usize) {
        self.values[FWD_PACKETS] += 1;
        self.values[FWD_BYTES] += bytes as u64;
    }
    /// A packet the gateway wrote besides the one it was handed (released, RST, ICMP).
    pub fn transmitted(&mut self, bytes: usize) {
        self.values[TX_PACKETS] += 1;
        self.values[TX_BYTES] += bytes as u64;
    }
    pub fn held(&mut self) {
        self.values[HELD_PACKETS] += 1;
    }
    pub fn dropped(&mut self, reason: DropReason, bytes: usize) {
        let r = Label::index(reason);
        self.values[dropped_packets(r)] += 1;
        self.values[dropped_bytes(r)] += bytes as u64;
    }
    /// A decision: what the policy says, what the gateway did, and why.
    pub fn decision(&mut self, action: RecordAction, disposition: Disposition, reason: Reason) {
        let i = decision(action.index(), disposition.index(), Label::index(reason));
        self.values[i] += 1;
    }
    pub fn tun_read_error(&mut self) {
        self.values[TUN_READ_ERRORS] += 1;
    }
    pub fn tun_write_error(&mut self) {
        self.values[TUN_WRITE_ERRORS] += 1;
    }
    /// Gauges and counters the pipeline keeps itself.
    pub fn set_flow_state(&mut self, state: FlowTableState) {
        self.values[ACTIVE_FLOWS] = state.active;
        self.values[HELD_BYTES] = state.held_bytes;
        self.values[FLOW_LIMIT_REFUSALS] = state.flow_limit_refusals;
        self.values[FLOW_EVICTIONS] = state.evictions;
        self.values[FLOW_CAPACITY] = state.capacity;
    }

    /// Copies the tally to the shared block (the owner is the only writer).
    /// The pipeline's DNS check counters (monotonic totals, published as they are).
    pub fn set_dns_event(&mut self, event: DnsEvent, total: u64) {
        self.values[dns_event(event.index())] = total;
    }

    pub fn publish(&self, to: &WorkerCounters) {
        for (a, v) in to.values.iter().zip(self.values.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
    }
}

impl WorkerCounters {
    pub(super) fn new() -> WorkerCounters {
        WorkerCounters {
            values: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    pub(super) fn get(&self, i: usize) -> u64 {
        self.values[i].load(Ordering::Relaxed)
    }

    /// A fresh local tally for the worker that owns this block.
    pub fn local(&self) -> LocalCounters {
        LocalCounters {
            values: Box::new(std::array::from_fn(|i| self.get(i))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_blocks_tile_the_array() {
        assert_eq!(dropped_packets(0), FIXED);
        assert_eq!(dropped_bytes(0), dropped_packets(DROP_LABELS - 1) + 1);
        assert_eq!(decision(0, 0, 0), dropped_bytes(DROP_LABELS - 1) + 1);
        assert_eq!(
            decision(ACTION_LABELS - 1, DISPOSITION_LABELS - 1, REASON_LABELS - 1) + 1,
            dns_event(0)
        );
        assert_eq!(dns_event(DNS_EVENT_LABELS - 1), SLOTS - 1);
        assert_eq!(decision(0, 1, 0) - decision(0, 0, 0), REASON_LABELS);
    }

    #[test]
    fn local_tally_starts_from_the_published_block() {
        let shared = WorkerCounters::new();
        let mut a = shared.local();
        a.dropped(DropReason::FailClosed(Reason::Unknown), 9);
        a.decision(RecordAction::Denied, Disposition::Detected, Reason::Unknown);
        a.publish(&shared);
        let b = shared.local();
        assert_eq!(b.values, a.values);
        let other = DropReason::VALUES.len() - 1;
        assert_eq!(shared.get(dropped_bytes(other)), 9);
        assert_eq!(shared.get(dns_event(0) - 1), 1);
    }
}
