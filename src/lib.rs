//! hookrelay: a single-binary webhook platform. Producers publish events;
//! hookrelay stores each durably, delivers it signed and with retries to
//! every subscribed endpoint, and keeps a delivery log.
//!
//! # Layout
//! - `app`: `Application` — opens the store, starts the actors, binds HTTP.
//! - `config`: typed settings from `config.toml` and `HOOKRELAY_*`.
//! - `error`: the API error type and its JSON shape.
//! - `domain`: organisations, webhooks, the catalog, events, deliveries.
//! - `canonical`: JSON normalised for JavaScript body fidelity.
//! - `signing`: the signature schemes and delivery headers.
//! - `storage`: the only module that touches sled.
//! - `net`: SSRF address rules, the guarded outbound client, and the
//!   connection budget derived from the open-file limit.
//! - `actors`: the registry, one delivery actor per webhook, the log
//!   writer, and the broadcaster with its feed sessions.
//! - `http`: the API, one file per resource.
//! - `simulation`: sample payloads of every catalog event (SPEC §7).
//! - `dashboard`: the embedded page served at `/`.
//! - `retention`: the background purge of old events and log entries.
//! - `metrics`: the Prometheus metrics behind `GET /metrics`.
//! - `clock`: Unix ms and ISO 8601 times.

pub mod actors;
pub mod app;
pub mod canonical;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod net;
pub mod retention;
pub mod signing;
pub mod simulation;
pub mod storage;

/// mimalloc rather than glibc's malloc: the delivery path allocates and
/// frees many small buffers across threads, and glibc spent about an eighth
/// of all CPU time in malloc, free and consolidation under load; with
/// mimalloc end-to-end throughput rose by half (benches/delivery.rs).
/// Declared here so the binary, the benchmarks and the tests all run with
/// the allocator that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Has the allocator keep freed memory for a second before returning it to
/// the OS; mimalloc's default of 10 ms purged and then re-faulted the same
/// pages under bursty load, which showed as ingest-to-receipt latency
/// spikes (benches/delivery.rs, measure d). Also turns transparent huge
/// pages off. Idempotent.
pub(crate) fn tune_allocator() {
    use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};
    // `mi_option_purge_delay` in mimalloc 3's mimalloc.h; the -sys crate
    // names no constant for it. Set only if it holds the documented default
    // (10 ms), so a renumbering in a later version cannot change another
    // option.
    const PURGE_DELAY: mi_option_t = 15;
    // SAFETY: plain reads and writes of mimalloc's option table.
    unsafe {
        if mi_option_get(PURGE_DELAY) == 10 {
            mi_option_set(PURGE_DELAY, 1000);
        }
    }
    disable_transparent_huge_pages();
}

/// Turns transparent huge pages off for the whole process. mimalloc asks
/// for them on its arenas, and the kernel then zeroes 2 MiB at a time on
/// first touch: about a sixteenth of all CPU in the fan-out benchmark,
/// whose memory grows with its backlog. Without them (c) rose by about
/// 6 % (four alternating pairs of runs); (b) did not move.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: sets a flag of this process; no memory is passed.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done != 0 {
        log::debug!("cannot turn transparent huge pages off");
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

#[cfg(test)]
mod tests {
    /// Fails if a mimalloc upgrade moves or changes the option, which would
    /// silently turn `tune_allocator` into a no-op.
    #[test]
    fn the_allocator_keeps_freed_memory_for_a_second() {
        super::tune_allocator();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(15) }, 1000);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_off() {
        super::tune_allocator();
        let off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(off, 1);
    }
}
