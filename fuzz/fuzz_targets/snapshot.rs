//! Our MessagePack live-upgrade snapshot reader (`Snapshot::from_msgpack`).
//!
//! Asserts: no panic and no allocation beyond the input's size for any
//! declared length; only our format, versions MIN_VERSION to VERSION, is
//! accepted; an accepted snapshot re-encodes to one that reads back equal
//! and re-encodes identically.

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtlockd::state::{Snapshot, FORMAT, MIN_VERSION, VERSION};

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = Snapshot::from_msgpack(data) else {
        return;
    };
    assert_eq!(snapshot.format, FORMAT);
    assert!((MIN_VERSION..=VERSION).contains(&snapshot.version));
    let _ = snapshot.fds();
    let encoded = snapshot.to_msgpack().expect("a read snapshot encodes");
    let back = Snapshot::from_msgpack(&encoded).expect("a re-encoded snapshot reads");
    assert_eq!(back, snapshot);
    assert_eq!(back.to_msgpack().expect("encodes"), encoded);
});
