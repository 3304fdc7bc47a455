//! The `bulkhead` binary's global allocator: the system allocator, plus a request for
//! transparent huge pages on every large allocation.
//!
//! Why: the compiled policy is a few large tables (tens of MiB for a large policy) read at random
//! addresses, one dependent read after another; so is the flow table. With 4 KiB pages nearly
//! every such read also misses the TLB and pays a page-table walk. Measured on the policy bench
//! (`benches/benches/policy.rs`, 10k rules, 17 MiB compiled), a decision took 706 ns of CPU time
//! with 4 KiB pages and 386 ns with the same tables on 2 MiB pages.
//!
//! Most distributions set transparent huge pages to `madvise`: only ranges the program marks with
//! `MADV_HUGEPAGE` get them, and only 2 MiB-aligned 2 MiB extents of such ranges. So every
//! allocation of at least [`HUGE_PAGE_THRESHOLD`] bytes is placed on a 2 MiB boundary, its size
//! rounded up to a multiple of 2 MiB, and marked before its memory is first touched (the kernel
//! decides the page size at the first touch). Growing such an allocation moves it to a new one
//! (allocate, copy, free), so its contents land on the new, marked pages. The rounding costs
//! address space, and at most one partly used huge page per allocation. Where huge pages are
//! disabled or none is free, the memory simply stays on small pages.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations from this size on are placed and marked for huge pages.
pub const HUGE_PAGE_THRESHOLD: usize = HUGE_PAGE;
const HUGE_PAGE: usize = 2 << 20;

/// The system allocator, placing large allocations on transparent huge pages.
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePageAlloc;

/// The layout a large allocation is really made with: 2 MiB-aligned, a multiple of 2 MiB.
fn huge_layout(layout: Layout) -> Option<Layout> {
    if layout.size() < HUGE_PAGE_THRESHOLD {
        return None;
    }
    let size = layout.size().checked_next_multiple_of(HUGE_PAGE)?;
    Layout::from_size_align(size, layout.align().max(HUGE_PAGE)).ok()
}

/// Asks for huge pages on `[ptr, ptr + len)`, which is 2 MiB-aligned.
fn advise_huge(ptr: *mut u8, len: usize) {
    // SAFETY: the range is an allocation this allocator just made and owns; madvise with
    // MADV_HUGEPAGE changes only how the kernel backs the pages, never their contents or
    // validity, and its failure (huge pages disabled) leaves the memory as it was.
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
    }
}

// SAFETY: small allocations are `System`'s, unchanged. A large one is made by `System` with the
// layout `huge_layout` derives from the caller's (same size class, stricter alignment), and freed
// with the layout derived the same way from the caller's layout at `dealloc`, so `System` always
// sees matching layouts; the pointer it returns satisfies the caller's alignment and size.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match huge_layout(layout) {
            None => {
                // SAFETY: forwarded with the caller's guarantees (non-zero size).
                unsafe { System.alloc(layout) }
            }
            Some(huge) => {
                // SAFETY: `huge` has a non-zero size.
                let p = unsafe { System.alloc(huge) };
                if !p.is_null() {
                    advise_huge(p, huge.size());
                }
                p
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match huge_layout(layout) {
            None => {
                // SAFETY: forwarded with the caller's guarantees.
                unsafe { System.alloc_zeroed(layout) }
            }
            Some(_) => {
                // Zeroed after the advice, so the zeroing itself faults in huge pages.
                // SAFETY: `layout` has a non-zero size; on success the block is valid for
                // `layout.size()` bytes.
                let p = unsafe { self.alloc(layout) };
                if !p.is_null() {
                    // SAFETY: `p` is valid for writes of `layout.size()` bytes.
                    unsafe { p.write_bytes(0, layout.size()) };
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match huge_layout(layout) {
            // SAFETY: `ptr` came from `System` with this very layout.
            None => unsafe { System.dealloc(ptr, layout) },
            // SAFETY: `ptr` came from `System` with the layout derived the same way at `alloc`.
            Some(huge) => unsafe { System.dealloc(ptr, huge) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if huge_layout(layout).is_none() && huge_layout(new_layout).is_none() {
            // SAFETY: both small: `System`'s own realloc, with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if let (Some(old), Some(new)) = (huge_layout(layout), huge_layout(new_layout)) {
            if old == new {
                // Still fits the rounded block it already has.
                return ptr;
            }
        }
        // Move to a new block (placed and marked when large), so the contents are copied onto
        // pages chosen after the advice.
        // SAFETY: `new_layout` has a non-zero size (the caller's `new_size`).
        let p = unsafe { self.alloc(new_layout) };
        if !p.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and distinct.
            unsafe { std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size)) };
            // SAFETY: `ptr` was allocated by this allocator with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_allocations_work_and_keep_their_contents() {
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(HUGE_PAGE_THRESHOLD + 12345, 64).unwrap();
        assert_eq!(huge_layout(layout).unwrap().size(), 2 * HUGE_PAGE);
        // SAFETY: non-zero layout; the pointer is checked, used within its size and freed with
        // the same layout (after realloc, with the new size).
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE_PAGE, 0, "placed on a huge-page boundary");
            assert_eq!(*p.add(layout.size() - 1), 0);
            for i in (0..layout.size()).step_by(4096) {
                *p.add(i) = (i / 4096) as u8;
            }
            // Within the rounded block: it stays.
            let within = layout.size() + 1000;
            let p = a.realloc(p, layout, within);
            assert!(!p.is_null());
            let layout = Layout::from_size_align(within, 64).unwrap();
            let bigger = layout.size() * 2;
            let q = a.realloc(p, layout, bigger);
            assert!(!q.is_null());
            assert_eq!(q as usize % HUGE_PAGE, 0);
            for i in (0..layout.size()).step_by(4096) {
                assert_eq!(*q.add(i), (i / 4096) as u8);
            }
            // Shrinking below the threshold moves it back to a small block.
            let small = a.realloc(q, Layout::from_size_align(bigger, 64).unwrap(), 8192);
            assert!(!small.is_null());
            assert_eq!(*small.add(4096), 1);
            a.dealloc(small, Layout::from_size_align(8192, 64).unwrap());
        }
    }

    #[test]
    fn small_allocations_are_the_system_allocators() {
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            *p = 7;
            a.dealloc(p, layout);
        }
    }
}
