//! The `sluice` binary's global allocator: mimalloc, called the way its C API is fastest.
//!
//! Not a module of the library (which forbids `unsafe`): the binary includes it
//! (`src/main.rs`), and so do the benches and examples that must allocate as the binary does
//! (`#[path]`).
//!
//! The `mimalloc` crate's allocator calls `mi_malloc_aligned` for every allocation. Under
//! 1 KiB that takes a fast path, but a larger block whose size is not a power of two (hyper's
//! 8 KiB read buffers plus padding, a request's boxed future, a header map's entries) went
//! to mimalloc's aligned slow path and over-allocation every time: ~190 instructions, four
//! times per proxied request. Rust asks for at most 8-byte alignment almost always, and
//! every mimalloc block is 8-byte aligned, so those requests go to `mi_malloc` (and
//! `mi_zalloc`, `mi_realloc`); only a larger alignment takes the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has (its smallest block is one 8-byte word, and
/// blocks are whole words).
const MI_MIN_ALIGN: usize = 8;

/// mimalloc, plain calls for alignments up to 8 bytes.
pub struct Mimalloc;

// SAFETY: every pointer handed out comes from mimalloc with at least the layout's size and
// alignment (`mi_malloc` blocks are 8-byte aligned; larger alignments use the aligned
// calls), and every pointer taken back is one of those, freed or resized by mimalloc with
// the same alignment rule (a layout's alignment never changes across `realloc`).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl; mimalloc's calls take any size.
        unsafe {
            if layout.align() <= MI_MIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= MI_MIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract).
        unsafe {
            if layout.align() <= MI_MIN_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}
