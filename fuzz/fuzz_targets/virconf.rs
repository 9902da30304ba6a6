//! The virConf parser of `virtlockd.conf` (`Config::parse_str`), on any text.
//!
//! Asserts: no panic; parsing is deterministic (same settings, warnings or
//! error twice); every warning names the file it is about.

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtlockd::config::Config;

const ORIGIN: &str = "/etc/libvirt/virtlockd.conf";

fuzz_target!(|data: &[u8]| {
    // The daemon reads the file as UTF-8 text; other bytes fail before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Config::parse_str(text, ORIGIN);
    let second = Config::parse_str(text, ORIGIN);
    match (&first, &second) {
        (Ok((a, wa)), Ok((b, wb))) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert_eq!(wa, wb);
            for w in wa {
                assert!(w.starts_with(ORIGIN), "{w}");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("parsing the same text twice disagreed: {first:?} / {second:?}"),
    }
});
