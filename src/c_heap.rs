//! glibc's heap, as the C codecs (libjpeg-turbo, libwebp, libheif, dav1d) use it.
//!
//! Rust allocations go to mimalloc (`main.rs`), but the C codecs call `malloc` directly.
//! glibc serves a large block with its own `mmap` and gives it back on `free`, until a
//! freed block raises its *dynamic* mmap threshold: from then on blocks of up to 32 MiB
//! come from per-thread arenas, which keep the memory after `free`. Two image workers in
//! two arenas then each hold the last render's buffers, and the overload burst of
//! `tests/python/test_faults.py` peaked at 404–512 MiB against the 472 MiB that
//! docs/security.md promises for its limits (three runs, 17.9 MP JPEGs). With the threshold
//! fixed at glibc's default, 300–328 MiB.
//!
//! This is the one module that may use `unsafe` (STYLE.md: the place that must call C).

/// glibc's default mmap threshold: blocks from 128 KiB up are mapped and unmapped alone.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold (which also turns its dynamic adjustment off), so that the
/// C codecs' large buffers go back to the OS when freed. Call once, before the workers
/// start. Returns whether glibc took it; a no-op elsewhere.
pub fn return_large_blocks() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers, touches only the allocator's own settings
        // (under its lock), and is documented as safe to call at any time.
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        ok == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_threshold() {
        assert!(return_large_blocks());
    }
}
