//! The process's allocator: mimalloc, entered by its plain `mi_malloc` whenever the layout
//! allows.
//!
//! `mimalloc::MiMalloc` passes every layout's alignment to `mi_malloc_aligned`, whose fast path
//! covers only blocks of at most 1 KiB that happen to sit on a free list entry already
//! aligned; every larger block (request bodies, response buffers, a handler's boxed future)
//! and every miss takes the generic aligned path, which over-allocates and costs about three
//! times a plain allocation. A request made about nine such allocations (callgrind, one
//! keep-alive request: 26k of 150k allocations went that way).
//!
//! Every mimalloc block is aligned to at least a machine word (block sizes are multiples of 8
//! and a page's blocks start 16-byte aligned), so layouts aligned to 8 or less take
//! `mi_malloc` / `mi_zalloc` / `mi_realloc`; stricter ones go to `MiMalloc` as before. Frees
//! are the same call either way.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

pub struct Allocator;

// SAFETY: each method returns memory from mimalloc that satisfies `layout` (see the module
// comment for the word alignment of plain blocks), or null when out of memory; `dealloc` and
// `realloc` receive only pointers this allocator returned.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            unsafe { mi::mi_malloc(layout.size()).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            unsafe { mi::mi_zalloc(layout.size()).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            unsafe { mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates through `Allocator` directly (the test binary keeps the system allocator).
    fn check(size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).expect("valid layout");
        unsafe {
            let p = Allocator.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            p.write_bytes(0xA5, size);
            let z = Allocator.alloc_zeroed(layout);
            assert_eq!(z as usize % align, 0);
            assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
            let grown = Allocator.realloc(p, layout, size * 3 + 1);
            assert_eq!(grown as usize % align, 0);
            assert!(std::slice::from_raw_parts(grown, size)
                .iter()
                .all(|b| *b == 0xA5));
            Allocator.dealloc(grown, Layout::from_size_align(size * 3 + 1, align).unwrap());
            Allocator.dealloc(z, layout);
        }
    }

    #[test]
    fn every_layout_is_aligned_and_keeps_its_bytes() {
        for size in [1, 7, 8, 24, 40, 100, 1000, 1025, 5000, 70_000, 3 << 20] {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                check(size, align);
            }
        }
    }
}
