//! The `jobu` binary's memory allocator, a module of `main.rs` (the library never chooses
//! one): mimalloc serves Rust's allocations and SQLite's, gives freed pages back to the
//! system soon but not at once, and collects what idle threads freed.

// glibc's malloc took about a third of a worker's CPU in `jobu bench drain` (many small
// short-lived allocations across threads); mimalloc serves them from per-thread pages.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2 and v3; libmimalloc-sys does not
/// name it).
#[cfg(feature = "mimalloc")]
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its default in mimalloc v3, which libmimalloc-sys builds: milliseconds.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_DEFAULT_MS: std::ffi::c_long = 1000;

/// How long freed pages stay with their thread before they go back to the system.
#[cfg(feature = "mimalloc")]
const SHIPPED_PURGE_DELAY_MS: std::ffi::c_long = 100;

/// mimalloc keeps freed pages for a second and gives them back only when the thread next
/// allocates, so idle threads keep theirs: an idle `jobu run` held 20 MB of heap instead of
/// 12. Giving them back at once cost a busy worker a fifth of its CPU in `madvise` and in
/// faulting the pages in again (`perf`, `jobu bench drain`); 100 ms keeps the pages a burst
/// reuses (drain CPU −14 to −17 %) for about 1 MB more in an idle `jobu run` (with
/// [`collect_freed_memory`]). Unless `MIMALLOC_PURGE_DELAY` says otherwise, that is the
/// delay. Runs first in `main`, before any other thread exists. The option is set only
/// while it reads as the purge delay's default, so a mimalloc that renumbered its options
/// is left alone rather than given a wrong setting (a test below catches such an upgrade).
#[cfg(feature = "mimalloc")]
fn return_freed_memory_soon() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reads and sets a plain option value while no other thread exists.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, SHIPPED_PURGE_DELAY_MS);
        }
    }
}

#[cfg(not(feature = "mimalloc"))]
fn return_freed_memory_soon() {}

/// SQLite allocates through an allocator of its own, glibc's malloc unless told otherwise:
/// every value a statement reads (sqlx copies each column of each row with
/// `sqlite3_value_dup`), statements, the page cache. In a SQLite drain that was a fifth of
/// the connection thread's time (`perf`: malloc, `malloc_consolidate`, trimming the arena
/// with `madvise` and faulting the pages back in). This hands SQLite mimalloc's functions
/// and turns off its allocation statistics, which take a global mutex on every allocation
/// and serve only the soft heap limit jobu does not set. SQLite copies the methods and
/// accepts them only before it is initialised, i.e. before the first connection opens;
/// returns whether it took them (it keeps its default otherwise).
#[cfg(feature = "mimalloc")]
fn sqlite_allocates_with_mimalloc() -> bool {
    use libsqlite3_sys as ffi;
    use std::ffi::{c_int, c_void};

    // Sizes are never negative; a negative one would be SQLite's bug, answered with NULL.
    unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
        match usize::try_from(n) {
            // SAFETY: mi_malloc may be called with any size from any thread.
            Ok(n) => unsafe { libmimalloc_sys::mi_malloc(n) },
            Err(_) => std::ptr::null_mut(),
        }
    }
    unsafe extern "C" fn x_free(p: *mut c_void) {
        // SAFETY: SQLite frees only what x_malloc or x_realloc returned.
        unsafe { libmimalloc_sys::mi_free(p) }
    }
    unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
        match usize::try_from(n) {
            // SAFETY: p came from x_malloc or x_realloc.
            Ok(n) => unsafe { libmimalloc_sys::mi_realloc(p, n) },
            Err(_) => std::ptr::null_mut(),
        }
    }
    unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
        // SAFETY: p came from x_malloc or x_realloc (or is NULL: 0).
        let size = unsafe { libmimalloc_sys::mi_usable_size(p) };
        c_int::try_from(size).unwrap_or(c_int::MAX)
    }
    unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
        let Ok(size) = usize::try_from(n) else {
            return n;
        };
        // SAFETY: a pure function of the size.
        let good = unsafe { libmimalloc_sys::mi_good_size(size) };
        c_int::try_from(good).unwrap_or(n)
    }
    unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
        ffi::SQLITE_OK
    }
    unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(x_malloc),
        xFree: Some(x_free),
        xRealloc: Some(x_realloc),
        xSize: Some(x_size),
        xRoundup: Some(x_roundup),
        xInit: Some(x_init),
        xShutdown: Some(x_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: sqlite3_config is called before SQLite is initialised (it refuses with
    // SQLITE_MISUSE otherwise and changes nothing), with the argument types each option
    // documents; SQLite copies the methods before returning.
    unsafe {
        let statistics = ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
        let malloc = ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_MALLOC,
            &methods as *const ffi::sqlite3_mem_methods,
        );
        statistics == ffi::SQLITE_OK && malloc == ffi::SQLITE_OK
    }
}

/// Sets the allocator up; runs first in `main`, before any other thread exists and before
/// SQLite is first used.
pub fn configure() {
    return_freed_memory_soon();
    #[cfg(feature = "mimalloc")]
    sqlite_allocates_with_mimalloc();
}

/// A thread's delayed purges run when it next allocates, so a thread that goes idle keeps
/// what it freed last. Once a second the daemon asks mimalloc for the purges whose delay has
/// passed: an idle `jobu run` held 27.8 MB with it, 28.2 – 29.4 MB without it and 26.4 –
/// 26.8 MB with no delay at all.
#[cfg(feature = "mimalloc")]
pub async fn collect_freed_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: mi_collect may be called from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

#[cfg(not(feature = "mimalloc"))]
pub async fn collect_freed_memory() {}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use super::*;

    /// Option 15 still reads as a purge delay of 1000 ms: an upgraded mimalloc that moved or
    /// changed the option fails here rather than silently keeping its 1 s delay.
    #[test]
    fn purge_delay_is_option_15_with_its_v3_default() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment chose the value
        }
        // SAFETY: reads a plain option value.
        let value = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(value, PURGE_DELAY_DEFAULT_MS);
    }

    /// SQLite takes mimalloc's functions (this test binary opens no SQLite database before
    /// it) and its allocations then come from mimalloc's heap.
    #[test]
    fn sqlite_allocates_from_mimalloc() {
        assert!(sqlite_allocates_with_mimalloc());
        // SAFETY: initialises SQLite, then allocates and frees one block through it.
        unsafe {
            assert_eq!(
                libsqlite3_sys::sqlite3_initialize(),
                libsqlite3_sys::SQLITE_OK
            );
            let p = libsqlite3_sys::sqlite3_malloc(100);
            assert!(!p.is_null());
            assert!(libmimalloc_sys::mi_is_in_heap_region(p));
            libsqlite3_sys::sqlite3_free(p);
        }
    }
}
