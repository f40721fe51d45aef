//! The allocator of a transform in WebAssembly: size classes over the
//! standard allocator.
//!
//! A transform allocates and frees the same few sizes over and over: the
//! input's bytes, the members of each parsed object, the output buffer. The
//! standard library's allocator on `wasm32-wasip2` is wasi-libc's dlmalloc,
//! general purpose and, compiled to WebAssembly, a tenth of a mapping
//! transform's time in profiles (`malloc`, `free`, `realloc` and their
//! bookkeeping). This one serves every allocation of up to [`MAX_SMALL`]
//! bytes from a free list per size class: allocating is popping a list,
//! freeing is pushing one, and growing a `Vec` within its class does not
//! move it. The classes are the powers of two from 16 and the midpoints
//! between them (16, 24, 32, 48, 64, 96, …, 4096), so a block wastes at
//! most a third of itself. Blocks are carved from 64 KiB slabs that come
//! from the standard allocator, as does everything larger or aligned to
//! more than 8 bytes.
//!
//! Freed blocks stay on their class's list for reuse and are not returned
//! to the standard allocator. An instance's memory therefore holds, per
//! class, the most blocks it ever used at once: a steady transform reaches
//! that after its first batches. The memory cap works as before: a slab the
//! host refuses is a failed allocation, which traps.
//!
//! It is the global allocator of a component built with the SDK's default
//! `fast-alloc` feature, on `wasm32` without threads only (the lists are not
//! synchronised, and a component instance is single threaded). Natively,
//! and with the feature off, the standard allocator is used.

#![allow(unsafe_code, reason = "a global allocator is unsafe by nature")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The largest allocation served from a size class.
pub const MAX_SMALL: usize = 4096;
/// The number of size classes: 16 and 24 … 4096, two per power of two.
const CLASSES: usize = 17;
/// The size of a slab that small blocks are carved from.
const SLAB: usize = 64 << 10;
/// The alignment every small block has (its size is a multiple of it).
const ALIGN: usize = 8;

/// The class of an allocation of `size` bytes (1 ..= [`MAX_SMALL`]).
#[inline(always)]
fn class_of(size: usize) -> usize {
    let s = size.max(16);
    // 2^b is the smallest power of two >= s; b >= 4.
    let b = (usize::BITS - (s - 1).leading_zeros()) as usize;
    // The midpoint class below 2^b: 3 * 2^(b-2), which starts at 24.
    if b > 4 && s <= 3 << (b - 2) {
        2 * (b - 4) - 1
    } else {
        2 * (b - 4)
    }
}

/// The block size of class `c`.
#[inline(always)]
fn class_size(c: usize) -> usize {
    if c.is_multiple_of(2) {
        16 << (c / 2)
    } else {
        24 << (c / 2)
    }
}

/// Whether `layout` is served from a size class.
#[inline(always)]
fn small(layout: Layout) -> bool {
    layout.size() <= MAX_SMALL && layout.align() <= ALIGN
}

/// The allocator's state: a free list per class and the slab being carved.
struct State {
    /// The first free block of each class; each free block holds the
    /// address of the next in its first bytes.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current slab: `next .. end`.
    next: usize,
    end: usize,
}

/// The size-class allocator (see the module docs).
pub struct SizeClasses {
    state: UnsafeCell<State>,
}

// SAFETY: only compiled for wasm32 without the `atomics` feature (see
// lib.rs), where there is one thread: no two calls can overlap.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// An allocator with empty lists; slabs are taken on first use.
    pub const fn new() -> Self {
        SizeClasses {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: 0,
                end: 0,
            }),
        }
    }

    /// A block of class `c`: from its list, else carved from the slab.
    #[inline(always)]
    unsafe fn take(&self, c: usize) -> *mut u8 {
        // SAFETY: single threaded (see `Sync`), and no reference to the
        // state outlives this call.
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[c];
        if !head.is_null() {
            // SAFETY: a free block of this class holds the next pointer.
            state.free[c] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = class_size(c);
        if state.end - state.next < size {
            // The rest of the old slab (less than one block of this class)
            // is given up. SAFETY: a valid, non-zero-sized layout.
            let slab = unsafe { System.alloc(Layout::from_size_align_unchecked(SLAB, 16)) };
            if slab.is_null() {
                return slab;
            }
            state.next = slab as usize;
            state.end = state.next + SLAB;
        }
        let block = state.next as *mut u8;
        state.next += size;
        block
    }

    /// Puts a block of class `c` on its list.
    #[inline(always)]
    unsafe fn give(&self, block: *mut u8, c: usize) {
        // SAFETY: as in `take`; the block is at least 16 bytes and 8-aligned.
        let state = unsafe { &mut *self.state.get() };
        unsafe { block.cast::<*mut u8>().write(state.free[c]) };
        state.free[c] = block;
    }
}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: small blocks are distinct, at least as large as asked and
// 8-aligned (slabs are 16-aligned and every class size is a multiple of 8);
// everything else is the standard allocator's. `dealloc` and `realloc` get
// the layout the block was allocated with (the trait's contract), so the
// size class or the standard allocator is found from it again.
unsafe impl GlobalAlloc for SizeClasses {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if small(layout) {
            unsafe { self.take(class_of(layout.size())) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if small(layout) {
            unsafe { self.give(block, class_of(layout.size())) }
        } else {
            unsafe { System.dealloc(block, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the trait's contract: `new_size` is non-zero and does not
        // overflow when rounded up to the alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (small(layout), small(new_layout)) {
            (true, true) if class_of(layout.size()) == class_of(new_size) => block,
            (false, false) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_size_tightly() {
        assert_eq!(class_size(0), 16);
        assert_eq!(class_size(1), 24);
        assert_eq!(class_size(CLASSES - 1), MAX_SMALL);
        for size in 1..=MAX_SMALL {
            let c = class_of(size);
            assert!(c < CLASSES, "{size}");
            assert!(class_size(c) >= size, "{size} fits class {c}");
            assert_eq!(class_size(c) % ALIGN, 0);
            if c > 0 {
                assert!(
                    class_size(c - 1) < size,
                    "{size} is in the smallest class that fits"
                );
                // At most a third of a block is waste.
                assert!(class_size(c) - size < class_size(c) / 3 + 1, "{size}");
            }
        }
    }

    #[test]
    fn blocks_are_reused_and_never_overlap() {
        let a = SizeClasses::new();
        unsafe {
            let l = Layout::from_size_align(100, 8).unwrap();
            let x = a.alloc(l);
            let y = a.alloc(l);
            assert!(!x.is_null() && !y.is_null());
            assert!((y as usize).abs_diff(x as usize) >= 128, "class 128 blocks");
            assert_eq!(x as usize % ALIGN, 0);
            x.write_bytes(0xAA, 100);
            y.write_bytes(0xBB, 100);
            assert_eq!(x.add(99).read(), 0xAA);
            a.dealloc(x, l);
            assert_eq!(a.alloc(l), x, "a freed block is the next one handed out");
            // Growing within the class keeps the block; past it, moves it
            // with its contents.
            let g = a.realloc(y, l, 120);
            assert_eq!(g, y);
            let l120 = Layout::from_size_align(120, 8).unwrap();
            let h = a.realloc(g, l120, 5000);
            assert_ne!(h, g);
            assert_eq!(h.add(99).read(), 0xBB);
            let l5000 = Layout::from_size_align(5000, 8).unwrap();
            let back = a.realloc(h, l5000, 40);
            assert_eq!(back.read(), 0xBB);
            a.dealloc(back, Layout::from_size_align(40, 8).unwrap());
            a.dealloc(x, l);
        }
    }
}
