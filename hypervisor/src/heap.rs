//! The hypervisor's heap: one block of frames handed to
//! `linked_list_allocator`. It backs the per-CPU structures and, later, the
//! device models; guest memory never comes from here.

#[cfg(all(feature = "image", not(test)))]
#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

pub const HEAP_SIZE: u64 = 8 << 20;

/// Hands `[start, start + size)` to the allocator.
///
/// # Safety
/// The range must be identity-mapped memory that nothing else uses, for the
/// rest of the run. Call once.
#[allow(unused_variables)]
pub unsafe fn init(start: u64, size: u64) {
    #[cfg(all(feature = "image", not(test)))]
    // SAFETY: forwarded to the caller.
    unsafe {
        HEAP.lock().init(start as *mut u8, size as usize)
    };
}
