//! Deadline queue for flow expiry.
//!
//! Each flow keeps its own deadline (idle timeout of its state, inspection timeout); the queue
//! holds at most one live entry per flow, the earliest deadline the flow asked for. Deadlines that
//! move later (every packet pushes the idle deadline) cost nothing here: when an entry comes due
//! the pipeline looks at the flow's real deadline and re-arms if it is still in the future. A
//! deadline that moves earlier (a FIN, the start of inspection) pushes a new entry; the flow
//! remembers which entry is current and stale ones are discarded when popped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::flow::FlowId;

/// Min-heap of `(deadline, flow)`.
#[derive(Debug, Default)]
pub struct DeadlineQueue {
    heap: BinaryHeap<Reverse<(Instant, FlowId)>>,
}

impl DeadlineQueue {
    /// An empty queue.
    pub fn new() -> DeadlineQueue {
        DeadlineQueue::default()
    }

    /// Adds an entry.
    pub fn push(&mut self, at: Instant, flow: FlowId) {
        self.heap.push(Reverse((at, flow)));
    }

    /// The earliest deadline (possibly of a stale entry: an early wake-up costs one pop).
    pub fn peek(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, FlowId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Entries in the queue, live and stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no entry is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::new();
        let f = |i| FlowId {
            index: i,
            generation: 0,
        };
        q.push(t0 + Duration::from_secs(3), f(3));
        q.push(t0 + Duration::from_secs(1), f(1));
        q.push(t0 + Duration::from_secs(2), f(2));
        assert_eq!(q.peek(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop_due(t0), None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(q.pop_due(now).map(|e| e.1), Some(f(1)));
        assert_eq!(q.pop_due(now).map(|e| e.1), Some(f(2)));
        assert_eq!(q.pop_due(now), None);
        assert_eq!(q.len(), 1);
    }
}
