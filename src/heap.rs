//! How the daemon's heap is kept: glibc's allocator without fast bins.
//!
//! Fast bins keep freed chunks of up to 128 bytes apart, never merged with
//! their neighbours until a large request comes. A lock client's pieces are
//! mostly that small, around tokio's 128-byte-aligned task and registration,
//! so after thousands of clients left, their freed memory stayed cut into
//! pieces a new client's task could not use: each further round of 9000
//! clients grew RSS by 1.5 MB (examples/memory.rs). Without fast bins freed
//! chunks merge at once and a second round takes nothing new. tcache (the
//! per-thread cache in front of them) still serves the hot small allocations
//! of a request.

/// Applies the policy; before any thread starts, so every arena follows it.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt(3) changes a setting of glibc's allocator; called while
    // the process is single-threaded.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}
