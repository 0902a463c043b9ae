//! A fresh instance starts from a clean copy of its memory, and the pages
//! the last instance in its slot wrote stay resident (reset by copying, not
//! faulted back in). An interpreter such as CPython leaves its heap dirty in
//! hundreds of separate runs; wasmtime 48 kept only the first 32 of them and
//! faulted the rest in again on every request, which made fresh Python
//! instances four times slower (see vendor/README.md).
//!
//! A slot keeps at most `keep_resident` (8 MiB by default) of pages; one
//! instance that dirtied more must not leave the slot keeping its pages in
//! place of the ones later instances need.
//!
//! The scatter guest's `/scatter` writes one byte in every fourth page of
//! the top 4 MiB of a 12 MiB array (256 separate runs) and says how many of
//! those bytes it found already written: anything but 0 means an instance
//! saw another's memory. `/fill` writes every page of the array (12 MiB,
//! over the budget).

use tern_tests::{TernUp, guest};

/// Minor page faults of a whole process so far (`/proc/PID/stat`, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name is in parentheses and may hold spaces; count after it.
    let after_name = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    after_name.split(' ').nth(7).expect("minflt field").parse().expect("minflt is a number")
}

/// Average minor faults of the whole `tern up` process per `/s/scatter`,
/// over 40 requests after 10 that warm the slot.
fn faults_per_scatter(up: &TernUp) -> u64 {
    let scatter = || {
        let r = up.get("/s/scatter");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body.trim(), "stale 0", "a fresh instance saw an earlier instance's writes");
    };
    for _ in 0..10 {
        scatter();
    }
    let requests = 40;
    let before = minor_faults(up.pid());
    for _ in 0..requests {
        scatter();
    }
    (minor_faults(up.pid()) - before) / requests
}

#[test]
fn scattered_dirty_pages_are_reset_in_place_not_faulted_in_again() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("scatter"), "scatter", &["--route", "/s/*"]);
    // Each request writes 256 pages. Faulting them in again costs at least
    // that per request; kept resident, the whole process faults a few.
    let per_request = faults_per_scatter(&up);
    eprintln!("{per_request} page faults per request");
    assert!(
        per_request < 64,
        "{per_request} page faults per request: the guest's dirty pages were not kept resident"
    );

    // One instance over the budget: keeping its lowest 8 MiB would keep the
    // pages below `scatter`'s and drop all 256 that it needs, for every
    // request after.
    let r = up.get("/s/fill");
    assert_eq!((r.status, r.body.trim()), (200, "stale 0"));
    let per_request = faults_per_scatter(&up);
    eprintln!("{per_request} page faults per request after /fill");
    assert!(
        per_request < 64,
        "{per_request} page faults per request after one instance over the budget: \
         the slot kept that instance's pages instead of the next ones'"
    );
}
