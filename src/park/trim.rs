//! Handing the memory parked connections let go of back to the system.
//!
//! A connection that parks frees its task and its socket registration (about a kilobyte),
//! but glibc keeps freed memory inside its heaps: it returns only the free space at the
//! top of a heap, never the free pages between live allocations, and tokio's tasks and
//! registrations are allocated together at accept time, between nothing else but each
//! other. `malloc_trim` returns the whole free pages among them (`MADV_DONTNEED`); they
//! stay mapped and come back, zeroed, when the heap uses them again.
//!
//! It walks every arena's free lists with the arena locked, so it runs once per burst of
//! parks, at most four times a second (see the lot), not per connection.

/// Returns free heap pages to the system; a no-op where the allocator is not glibc's.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and only rearranges the allocator's own free
    // memory under its locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
