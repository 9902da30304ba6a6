//! libvirt's restart-state JSON reader (`state::libvirt::from_json`): what
//! libvirt's virtlockd leaves for the daemon that it execs.
//!
//! Asserts: no panic; a document read is the default lockspace first and
//! carries only the two known servers; what is read, written back with
//! `to_json`, reads back the same (the rollback path: libvirt's daemon must
//! get the state this one adopted).

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtlockd::state::{self, libvirt};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(snapshot) = libvirt::from_json(text) else {
        return;
    };
    assert_eq!(snapshot.format, state::FORMAT);
    assert_eq!(snapshot.version, state::VERSION);
    assert!(snapshot
        .lockspaces
        .first()
        .is_some_and(|ls| ls.directory.is_none()));
    for s in &snapshot.servers {
        assert!(s.name == state::LOCK_SERVER || s.name == state::ADMIN_SERVER);
    }
    let _ = snapshot.fds();

    let written = libvirt::to_json(&snapshot).expect("an adopted state can be written back");
    let back = libvirt::from_json(&written).expect("what we write, we read");
    assert_eq!(back, snapshot, "written as:\n{written}");
});
