//! [`PolicyStore`]: the current compiled policy, swapped atomically.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Bumped on every store. Versions come from two numbering schemes (the local file's and the
    /// controller's), so a new policy may carry the version of the one it replaces: readers
    /// that must notice every swap compare generations, not versions.
    generation: AtomicU64,
}

impl PolicyStore {
    /// A store holding `initial`.
    pub fn new(initial: CompiledPolicy) -> PolicyStore {
        PolicyStore {
            current: ArcSwap::from_pointee(initial),
            generation: AtomicU64::new(0),
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
        let previous = self.current.swap(Arc::new(next));
        // After the swap: a reader that sees the new generation finds the new policy.
        self.generation.fetch_add(1, Ordering::Release);
        previous
    }

    /// How many times a policy was stored; changes with every [`PolicyStore::store`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
        assert_eq!(store.generation(), 1);
        // The same version again is still a new generation.
        drop(store.store(CompiledPolicy::deny_all(2)));
        assert_eq!(store.generation(), 2);
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
