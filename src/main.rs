//! The `sluice` binary: parse the command line and dispatch.
//!
//! The library forbids `unsafe`; the binary denies it but for two justified uses (turning
//! transparent huge pages off, which no safe API does, and the global allocator's calls into
//! mimalloc), allowed where they are.
#![deny(unsafe_code)]

mod allocator;

/// mimalloc: ~10% less CPU per proxied request than glibc malloc on the peers.py load
/// (header maps and per-request futures are short-lived, thread-local allocations).
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;

fn main() {
    no_transparent_huge_pages();
    std::process::exit(sluice::cli::main());
}

/// Turns transparent huge pages off for this process, for every mapping present and future.
///
/// mimalloc reserves its arenas committed on Linux and `madvise(MADV_HUGEPAGE)`s them, so
/// with THP in `madvise` mode (Debian's default) the few small blocks an idle connection
/// keeps are backed by 2 MiB pages: 21 KiB of resident memory per idle keep-alive
/// connection instead of 13.9 KiB (`examples/idle_memory.rs`, README "Memory per idle
/// connection"), and twice the resident set at start. This is what `MIMALLOC_ALLOW_THP=0`
/// does, made the default: the flag is per process, so it also covers the arena mimalloc
/// reserved before `main`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and reads no memory of ours.
    // A kernel without it (before 3.15) answers EINVAL: nothing to turn off then.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn no_transparent_huge_pages() {}
