//! The lock program's arguments (`LockCall::decode`) as any local client can
//! send them. Input: one byte choosing the procedure, then the payload.
//!
//! Asserts: no panic; decoded arguments re-encode to bytes that decode to the
//! same call and re-encode identically (round trip); every strict prefix of
//! those bytes is an error, never a call (no partial state from a short
//! packet); the flags check answers for every call.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use virtlockd::protocol::lock::{LockCall, Procedure};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let Some(procedure) = Procedure::from_wire(i32::from(selector % 8) + 1) else {
        unreachable!("procedures 1 to 8 exist");
    };
    let payload = Bytes::copy_from_slice(payload);
    let Ok(call) = LockCall::decode(procedure, &payload) else {
        return;
    };
    assert_eq!(call.procedure(), procedure);
    if let Err(e) = call.check_flags() {
        assert!(
            e.message.starts_with("unsupported flags (0x"),
            "{}",
            e.message
        );
    }

    let mut encoded = BytesMut::new();
    call.encode(&mut encoded);
    let encoded = encoded.freeze();
    let again = LockCall::decode(procedure, &encoded).expect("re-encoded call decodes");
    assert_eq!(again, call);
    let mut twice = BytesMut::new();
    again.encode(&mut twice);
    assert_eq!(twice, encoded);

    // A packet cut short anywhere is refused. Checking every cut is quadratic:
    // the last byte, the first field, and one cut chosen by the input.
    let cuts = [
        encoded.len() - 1,
        4.min(encoded.len() - 1),
        usize::from(selector) * 7 % encoded.len(),
    ];
    for cut in cuts {
        assert!(
            LockCall::decode(procedure, &encoded.slice(..cut)).is_err(),
            "{procedure:?} decoded from {cut} of {} bytes",
            encoded.len()
        );
    }
});
