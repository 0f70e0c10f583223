//! The `pier` binary: tunes the C allocator, then hands the command line to `pier::cli`.

fn main() {
    keep_freed_buffers();
    release_freed_memory();
    // `args_os`: an argument that is not UTF-8 (a file name, say) must not panic.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(pier::cli::main(args));
}

/// Upload bodies arrive in hyper read buffers of up to ~400 KiB, each allocated fresh while the
/// previous ones are still queued for the file write (at most ~4 MiB per upload: see
/// `WRITE_AHEAD` in `http::handlers::uploads`). With glibc's defaults the freed buffers end up at
/// the top of a thread arena and are handed back to the kernel (`MADV_DONTNEED`), so the next
/// buffers page-fault and zero-fill every page again: ~200,000 page faults and ~15 % of the CPU
/// of a 4 GiB push (0.2 CPU-s per GiB). Keeping up to 8 MiB of free memory at the top of the
/// arena (more than one upload has in flight) and serving buffers below 4 MiB from it makes them
/// reuse warm pages: ~3,000 page faults for the same push.
///
/// One arena for all threads keeps what is retained bounded by those 8 MiB whatever the number
/// of threads (with one arena per thread, each blocking thread kept its own, and the peak RSS of
/// a 4 GiB pull after a push was 24-31 MiB instead of 15-17 MiB). Small allocations go through
/// glibc's per-thread caches anyway: manifest GET rate measured the same (33-34k req/s).
/// Idle RSS is not affected (nothing is kept before it was allocated once).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_buffers() {
    const TRIM_THRESHOLD: nix::libc::c_int = 8 << 20;
    const MMAP_THRESHOLD: nix::libc::c_int = 4 << 20;
    const ARENAS: nix::libc::c_int = 1;
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and a refused setting (return value 0) just leaves glibc's default in place.
    unsafe {
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, ARENAS);
    }
}

/// musl and other C libraries have no comparable knobs (musl's mallocng keeps its own policy).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

/// glibc returns freed memory to the kernel only from the top of the heap; memory freed below a
/// block still in use stays in the process. After a burst of connections (600 stalled downloads:
/// ~35 MiB of buffers and connection state, freed in whatever order the clients left) RSS would
/// stay at the peak for good. Every few seconds, when more than `RELEASE_ABOVE` bytes lie free in
/// the heap, `malloc_trim` hands the free pages back (keeping `TRIM_THRESHOLD` at the top, as
/// `keep_freed_buffers` does): RSS falls back near idle once a burst is over. The check is one
/// `mallinfo2` call; a trim walks the heap's free lists (well under a millisecond here).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    const RELEASE_ABOVE: usize = 16 << 20;
    const TRIM_THRESHOLD: usize = 8 << 20;
    let spawned = std::thread::Builder::new().name("memory-release".into()).spawn(|| loop {
        std::thread::sleep(EVERY);
        // SAFETY: both calls only read or adjust the allocator's own bookkeeping; glibc makes
        // them safe to call from any thread at any time.
        unsafe {
            if nix::libc::mallinfo2().fordblks > RELEASE_ABOVE {
                nix::libc::malloc_trim(TRIM_THRESHOLD);
            }
        }
    });
    // Without the thread pier still works; it just keeps what a burst left.
    drop(spawned);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
