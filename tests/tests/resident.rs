//! A fresh instance starts from a clean copy of its memory, and the pages
//! the last instance in its slot wrote stay resident (reset by copying, not
//! faulted back in). An interpreter such as CPython leaves its heap dirty in
//! hundreds of separate runs; wasmtime 48 kept only the first 32 of them and
//! faulted the rest in again on every request, which made fresh Python
//! instances four times slower (see vendor/README.md).
//!
//! The hostile guest's `/scatter` writes one byte in every other page of a
//! 2 MiB array (256 separate runs) and says how many of those bytes it found
//! already written: anything but 0 means an instance saw another's memory.

use tern_tests::{TernUp, guest};

/// Minor page faults of a whole process so far (`/proc/PID/stat`, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name is in parentheses and may hold spaces; count after it.
    let after_name = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    after_name.split(' ').nth(7).expect("minflt field").parse().expect("minflt is a number")
}

#[test]
fn scattered_dirty_pages_are_reset_in_place_not_faulted_in_again() {
    let (_dir, up) = TernUp::start_temp();
    up.deploy(&guest("hostile"), "scatter", &["--route", "/s/*"]);
    let scatter = || {
        let r = up.get("/s/scatter");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body.trim(), "stale 0", "a fresh instance saw an earlier instance's writes");
    };
    // The first requests fault the pages in and warm the slot.
    for _ in 0..10 {
        scatter();
    }
    let requests = 40;
    let before = minor_faults(up.pid());
    for _ in 0..requests {
        scatter();
    }
    let per_request = (minor_faults(up.pid()) - before) / requests;
    eprintln!("{per_request} page faults per request");
    // Each request writes 256 pages. Faulting them in again costs at least
    // that per request; kept resident, the whole process faults a few.
    assert!(
        per_request < 64,
        "{per_request} page faults per request: the guest's dirty pages were not kept resident"
    );
}
