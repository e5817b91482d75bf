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
//! `mi_malloc` / `mi_zalloc` / `mi_realloc`. Stricter ones (up to 128 bytes) ask `mi_malloc` for
//! the size rounded up to a multiple of the alignment and keep the block when it is aligned,
//! which is what mimalloc gives in practice (its pages start aligned and its block sizes
//! above 1 KiB are multiples of 128): monoio's timer entry is padded to 128 bytes, so every
//! future holding a timeout is 128-aligned, and boxing one took the over-allocating aligned
//! path twice a request. A block that is not aligned is freed and the layout goes to
//! `MiMalloc` as before. Frees are the same call either way.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();
/// The strictest alignment tried on the plain path first: the one measured (every size tried
/// from 1 KiB to 16 KiB, rounded to 128, came aligned); stricter layouts are rare and go
/// straight to the aligned path.
const PLAIN_FIRST_MAX_ALIGN: usize = 128;

/// A block of `layout` from the plain path when it happens to be aligned (see the module
/// comment), else null.
#[inline]
unsafe fn plain_if_aligned(layout: Layout, zeroed: bool) -> *mut u8 {
    let align = layout.align();
    if align > PLAIN_FIRST_MAX_ALIGN {
        return std::ptr::null_mut();
    }
    // A size that is a multiple of the alignment lands in a size class whose blocks, laid out
    // from an aligned page start, are aligned; rounding cannot overflow for a valid layout
    // (its size rounded up to its alignment fits in isize).
    let size = layout.size().next_multiple_of(align);
    let p: *mut u8 = unsafe {
        if zeroed {
            mi::mi_zalloc(size).cast()
        } else {
            mi::mi_malloc(size).cast()
        }
    };
    if p.is_null() || (p as usize) & (align - 1) == 0 {
        return p;
    }
    unsafe { mi::mi_free(p.cast::<c_void>()) };
    std::ptr::null_mut()
}

pub struct Allocator;

// SAFETY: each method returns memory from mimalloc that satisfies `layout` (see the module
// comment for the word alignment of plain blocks), or null when out of memory; `dealloc` and
// `realloc` receive only pointers this allocator returned.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            return unsafe { mi::mi_malloc(layout.size()).cast() };
        }
        let p = unsafe { plain_if_aligned(layout, false) };
        if p.is_null() {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        } else {
            p
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            return unsafe { mi::mi_zalloc(layout.size()).cast() };
        }
        let p = unsafe { plain_if_aligned(layout, true) };
        if p.is_null() {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        } else {
            p
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
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 4096, 8192] {
                check(size, align);
            }
        }
    }
}
