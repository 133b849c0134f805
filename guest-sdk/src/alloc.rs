//! The guest's allocator: free lists of small blocks in front of the standard one.
//!
//! An operator allocates a few small buffers per element (the event handed to
//! `process_element`, its key, what it emits), and frees them before the next. On
//! wasm32-wasip2 the standard allocator is dlmalloc, and its malloc and free were a
//! seventh of a Wasm keyed count's operator thread (docs/benchmarks.md). Blocks of up to
//! [`LARGEST`] bytes are therefore kept on a free list per size class when freed and
//! handed out again from it: a pop and a push. Larger blocks, stricter alignments and
//! free lists already holding [`KEPT_BYTES`] go to the standard allocator as before, so
//! what is kept stays bounded.
//!
//! Installed as the global allocator of guests built with the `small-alloc` feature (on
//! by default), only on single-threaded Wasm: the free lists are not synchronised.
//! A guest that prefers its own allocator turns the feature off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Block sizes of the classes; a request takes the smallest class that fits it.
const CLASSES: [usize; 6] = [16, 32, 64, 128, 256, 512];
/// The largest block kept on a free list.
const LARGEST: usize = CLASSES[CLASSES.len() - 1];
/// Every class block is allocated with this alignment (dlmalloc's own on wasm32 is 8).
const ALIGN: usize = 16;
/// The most bytes one class keeps on its free list.
const KEPT_BYTES: usize = 1 << 20;

/// A free block's first bytes: the next free block of its class.
struct Free {
    next: *mut Free,
}

#[derive(Clone, Copy)]
struct List {
    head: *mut Free,
    len: usize,
}

/// The global allocator of the guest (see the module's documentation).
pub struct SmallAlloc {
    lists: UnsafeCell<[List; CLASSES.len()]>,
}

// SAFETY: installed only where there is one thread (`lib.rs` gates it on single-threaded
// Wasm), so the free lists are never reached from two threads.
unsafe impl Sync for SmallAlloc {}

impl SmallAlloc {
    pub const fn new() -> Self {
        SmallAlloc { lists: UnsafeCell::new([List { head: ptr::null_mut(), len: 0 }; CLASSES.len()]) }
    }
}

impl Default for SmallAlloc {
    fn default() -> Self {
        Self::new()
    }
}

/// The class serving `layout`, if a class does.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST || layout.align() > ALIGN {
        return None;
    }
    // 16 bytes and less: class 0; then one class per power of two.
    Some(layout.size().max(CLASSES[0]).next_power_of_two().trailing_zeros() as usize - 4)
}

fn class_layout(class: usize) -> Layout {
    // SAFETY: every class size is a non-zero multiple of a power-of-two alignment.
    unsafe { Layout::from_size_align_unchecked(CLASSES[class], ALIGN) }
}

unsafe impl GlobalAlloc for SmallAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's layout, unchanged.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread, and no reference to the lists outlives this call.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if list.head.is_null() {
            // SAFETY: a valid, non-zero layout.
            return unsafe { System.alloc(class_layout(class)) };
        }
        let block = list.head;
        // SAFETY: a block on the list is a freed class block, its first bytes the link.
        list.head = unsafe { (*block).next };
        list.len -= 1;
        block.cast()
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: allocated by `System` with this layout (see `alloc`).
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: as in `alloc`.
        let list = unsafe { &mut (*self.lists.get())[class] };
        if (list.len + 1) * CLASSES[class] > KEPT_BYTES {
            // SAFETY: every block of a class comes from `System` with the class layout.
            return unsafe { System.dealloc(block, class_layout(class)) };
        }
        let block = block.cast::<Free>();
        // SAFETY: the block is at least 16 bytes, 16-aligned, and the caller gave it up.
        unsafe { block.write(Free { next: list.head }) };
        list.head = block;
        list.len += 1;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` carries over to each branch.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            match (class_of(layout), class_of(new_layout)) {
                // Large to large: the standard allocator may grow in place.
                (None, None) => System.realloc(block, layout, new_size),
                (Some(old), Some(new)) if old == new => block,
                _ => {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_blocks_are_handed_out_again_and_larger_ones_are_not_kept() {
        let alloc = SmallAlloc::new();
        let small = Layout::from_size_align(24, 8).unwrap();
        unsafe {
            let a = alloc.alloc(small);
            a.write_bytes(7, 24);
            alloc.dealloc(a, small);
            // Same class (32 bytes): the freed block comes back.
            let b = alloc.alloc(Layout::from_size_align(30, 4).unwrap());
            assert_eq!(a, b);
            // Growing within the class keeps the block; past it moves the bytes.
            b.write_bytes(9, 30);
            let c = alloc.realloc(b, Layout::from_size_align(30, 4).unwrap(), 32);
            assert_eq!(b, c);
            let d = alloc.realloc(c, Layout::from_size_align(32, 4).unwrap(), 1000);
            assert_ne!(c, d);
            assert!(std::slice::from_raw_parts(d, 30).iter().all(|&x| x == 9));
            alloc.dealloc(d, Layout::from_size_align(1000, 4).unwrap());
            // A list never keeps more than KEPT_BYTES.
            let tiny = Layout::from_size_align(16, 16).unwrap();
            let blocks: Vec<_> = (0..KEPT_BYTES / 16 + 10).map(|_| alloc.alloc(tiny)).collect();
            for &block in &blocks {
                alloc.dealloc(block, tiny);
            }
            assert_eq!((*alloc.lists.get())[0].len, KEPT_BYTES / 16);
        }
    }
}
