//! The heap the process has allocated, for `memory_limit` and
//! `$SYS/broker/heap/*`: a global allocator that counts, which a binary
//! opts into with `#[global_allocator]` (the `ferrymq` binary does).
//!
//! Every allocation and free adjusts a counter of the calling thread, and
//! the thread folds it into the process total once it has drifted by
//! [`FOLD`] bytes: a shared atomic touched on every allocation would be a
//! cache line bouncing between the cores on the hot path. The total is
//! therefore exact to within `FOLD` bytes per thread, which is far finer
//! than any sensible limit. Without the counting allocator the total stays
//! 0 and no limit is ever reached.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Bytes a thread's own count may drift before it is folded into the total.
const FOLD: isize = 64 * 1024;

/// Bytes allocated and not freed, as folded so far.
static TOTAL: AtomicIsize = AtomicIsize::new(0);
/// The highest total seen at a fold.
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without a destructor: usable from inside the allocator,
    // even while the thread is being torn down.
    static DRIFT: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counted.
#[derive(Debug)]
pub struct Counting;

#[inline]
fn account(delta: isize) {
    let folded = DRIFT.try_with(|drift| {
        let now = drift.get() + delta;
        if now.abs() < FOLD {
            drift.set(now);
            return;
        }
        drift.set(0);
        let total = TOTAL.fetch_add(now, Ordering::Relaxed) + now;
        PEAK.fetch_max(total.max(0) as usize, Ordering::Relaxed);
    });
    // A thread past its thread-locals counts straight into the total.
    if folded.is_err() {
        TOTAL.fetch_add(delta, Ordering::Relaxed);
    }
}

// The one place the broker implements an allocator: it forwards every call
// to the system allocator unchanged and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is, from System.
        unsafe { System.dealloc(ptr, layout) };
        account(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Bytes allocated now (0 unless the counting allocator is in use).
pub fn current() -> usize {
    TOTAL.load(Ordering::Relaxed).max(0) as usize
}

/// The most bytes allocated at once so far.
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Whether the heap has reached `limit` bytes (`memory_limit`; `None`: no
/// limit).
#[inline]
pub fn over(limit: Option<usize>) -> bool {
    limit.is_some_and(|limit| current() >= limit)
}
