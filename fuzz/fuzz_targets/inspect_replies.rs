//! The inspection program's reply payloads (LIST_LOCKS, LIST_CLIENTS, STATUS)
//! as `virtlockctl` decodes them. Input: one byte choosing the procedure, then
//! the payload.
//!
//! Asserts: no panic and no allocation beyond the input's size for any count;
//! decoded replies re-encode to bytes that decode to the same values and
//! re-encode identically; a re-encoded reply cut short is an error, never a
//! shorter list.

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtlockd::protocol::inspect::{
    decode_clients, decode_leases, encode_clients, encode_leases, StatusView,
};

/// `decode(encode(v)) == v`, `encode` stable, and a truncated encoding fails.
fn round_trip<T: PartialEq + std::fmt::Debug>(
    value: &T,
    encode: impl Fn(&T) -> bytes::Bytes,
    decode: impl Fn(&[u8]) -> Result<T, virtlockd::protocol::xdr::XdrError>,
) {
    let encoded = encode(value);
    let back = decode(&encoded).expect("a re-encoded reply decodes");
    assert_eq!(&back, value);
    assert_eq!(encode(&back), encoded);
    if !encoded.is_empty() {
        assert!(decode(&encoded[..encoded.len() - 1]).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(leases) = decode_leases(payload) {
                round_trip(&leases, |l| encode_leases(l), decode_leases);
            }
        }
        1 => {
            if let Ok(clients) = decode_clients(payload) {
                round_trip(&clients, |c| encode_clients(c), decode_clients);
            }
        }
        _ => {
            if let Ok(status) = StatusView::decode(payload) {
                round_trip(&status, StatusView::encode, StatusView::decode);
            }
        }
    }
});
