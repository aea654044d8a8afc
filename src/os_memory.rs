//! How the process takes memory from the OS: glibc's heap, as the C codecs (libjpeg-turbo,
//! libwebp, libheif, dav1d) use it, and transparent huge pages for the edge.
//!
//! **glibc's mmap threshold.** Rust allocations go to mimalloc (`main.rs`), but the C
//! codecs call `malloc` directly. glibc serves a large block with its own `mmap` and gives
//! it back on `free`, until a freed block raises its *dynamic* mmap threshold: from then on
//! blocks of up to 32 MiB come from per-thread arenas, which keep the memory after `free`.
//! Each image worker's arena then holds the last render's buffers, and the overload burst
//! of `tests/python/test_faults.py` peaked at 590–707 MiB against the 472 MiB that
//! docs/security.md promises for its limits (17.9 MP JPEGs, three runs). With the
//! threshold fixed at glibc's default: 376–417 MiB.
//!
//! **Transparent huge pages at the edge.** mimalloc advises its arenas `MADV_HUGEPAGE`, and
//! it hands freed pages back (`MADV_DONTNEED`) 10 ms after they empty. At the edge, where
//! every miss allocates TLS records and body buffers and the cache's memory tier churns,
//! each fault in such an arena then zeroes a whole 2 MiB page: `clear_page_erms` was 15 %
//! of all CPU in the miss benchmark (`perf record -a`, `scripts/bench-edge-cache.sh`). The
//! edge turns THP off for itself; the appliance keeps it, where a render's buffers are
//! megabytes and fewer faults help.
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

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`, kept
/// across fork and exec). Returns whether the kernel took it; a no-op elsewhere.
pub fn no_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integers only and changes a flag of this
        // process's memory descriptor; no memory is touched.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
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

    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_turns_huge_pages_off() {
        // The test binary is a process of its own; THP being off changes nothing it checks.
        assert!(no_huge_pages());
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        // Kernels from 6.x say so in /proc/self/status; older ones only take the call.
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert!(line.ends_with('0'), "{line}");
        }
    }
}
