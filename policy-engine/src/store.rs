//! [`PolicyStore`]: the current compiled policy, swapped atomically.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::compile::CompiledPolicy;

/// Lock-free holder of the current policy. Readers never block and never see a half-built
/// table: a new [`CompiledPolicy`] is built completely, then published with one atomic pointer
/// swap. The previous table stays alive while readers hold it; [`PolicyStore::store`] hands it
/// back so that the caller can drop it away from the packet path.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<CompiledPolicy>,
}

impl PolicyStore {
    /// A store holding `initial`.
    pub fn new(initial: CompiledPolicy) -> PolicyStore {
        PolicyStore {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// The current policy, for the hot path (no reference count traffic in the common case).
    pub fn load(&self) -> arc_swap::Guard<Arc<CompiledPolicy>> {
        self.current.load()
    }

    /// The current policy as an owned `Arc`, for holders that keep it for long.
    pub fn load_full(&self) -> Arc<CompiledPolicy> {
        self.current.load_full()
    }

    /// Publishes `next`; returns the previous policy.
    pub fn store(&self, next: CompiledPolicy) -> Arc<CompiledPolicy> {
        self.current.swap(Arc::new(next))
    }

    /// Version of the current policy.
    pub fn version(&self) -> u64 {
        self.current.load().version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_swaps_and_returns_previous() {
        let store = PolicyStore::new(CompiledPolicy::deny_all(1));
        assert_eq!(store.version(), 1);
        let held = store.load_full();
        let previous = store.store(CompiledPolicy::deny_all(2));
        assert_eq!(previous.version(), 1);
        assert_eq!(held.version(), 1);
        assert_eq!(store.version(), 2);
        assert_eq!(store.load().version(), 2);
    }

    #[test]
    fn readers_see_whole_policies_while_writers_swap() {
        let store = Arc::new(PolicyStore::new(CompiledPolicy::deny_all(0)));
        let reader = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..20_000 {
                    let v = store.load().version();
                    assert!(v >= last, "versions went backwards: {last} then {v}");
                    last = v;
                }
            })
        };
        for v in 1..=200 {
            drop(store.store(CompiledPolicy::deny_all(v)));
        }
        reader.join().expect("reader thread");
        assert_eq!(store.version(), 200);
    }
}
