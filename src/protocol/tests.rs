//! Exact-byte conformance of the wire encoding (spec Appendix A and libvirt's
//! virnetmessagetest vectors) and the dispatch rules of spec §2.5.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::lock::{LockCall, Owner, Procedure, ACQUIRE_AUTOCREATE};
use super::*;

fn hex(words: &str) -> Vec<u8> {
    let digits: String = words
        .lines()
        .flat_map(|l| {
            l.split_once(':')
                .map(|(_, w)| w)
                .unwrap_or(l)
                .split_whitespace()
        })
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn encode(frame: Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    FrameCodec.encode(frame, &mut out).unwrap();
    out.to_vec()
}

fn call_header(proc_: Procedure, serial: u32) -> Header {
    Header {
        prog: lock::PROGRAM,
        vers: lock::VERSION,
        proc_: proc_ as i32,
        msg_type: msg_type::CALL,
        serial,
        status: status::OK,
    }
}

fn call_frame(call: &LockCall, serial: u32) -> Frame {
    let mut payload = BytesMut::new();
    call.encode(&mut payload);
    Frame {
        header: call_header(call.procedure(), serial),
        payload: payload.freeze(),
    }
}

const REGISTER_CALL: &str = "
0000: 00000040 0ea7beef 00000001 00000001
0010: 00000000 00000000 00000000 00112233
0020: 44556677 8899aabb ccddeeff 00000003
0030: 766d3100 00000001 000004d2 00000000";

fn register_call() -> LockCall {
    LockCall::Register {
        owner: Owner {
            uuid: [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ],
            name: b"vm1".to_vec(),
            id: 1,
            pid: 1234,
        },
        flags: 0,
    }
}

#[test]
fn appendix_a_register_call_encodes_and_decodes() {
    let bytes = hex(REGISTER_CALL);
    assert_eq!(encode(call_frame(&register_call(), 0)), bytes);
    let frame = FrameCodec
        .decode(&mut BytesMut::from(&bytes[..]))
        .unwrap()
        .unwrap();
    assert_eq!(frame.header, call_header(Procedure::Register, 0));
    assert_eq!(
        LockCall::decode(Procedure::Register, &frame.payload).unwrap(),
        register_call()
    );
}

#[test]
fn appendix_a_void_reply() {
    let reply = void_reply(&call_header(Procedure::Register, 0));
    assert_eq!(
        encode(reply),
        hex("0000: 0000001c 0ea7beef 00000001 00000001\n0010: 00000001 00000000 00000000")
    );
}

#[test]
fn appendix_a_acquire_call() {
    let call = LockCall::Acquire {
        path: b"/var/lib/libvirt/lockd/files".to_vec().into(),
        name: b"ab".to_vec().into(),
        flags: ACQUIRE_AUTOCREATE,
    };
    assert_eq!(
        encode(call_frame(&call, 1)),
        hex("
0000: 00000048 0ea7beef 00000001 00000006
0010: 00000000 00000001 00000000 0000001c
0020: 2f766172 2f6c6962 2f6c6962 76697274
0030: 2f6c6f63 6b642f66 696c6573 00000002
0040: 61620000 00000002")
    );
}

#[test]
fn appendix_a_busy_error_reply() {
    let err = RemoteError::new(
        error::code::RESOURCE_BUSY,
        error::domain::LOCKSPACE,
        "Lockspace resource 'ab' is locked",
    );
    let reply = error_reply(&call_header(Procedure::AcquireResource, 1), &err);
    assert_eq!(
        encode(reply),
        hex("
0000: 000000bc 0ea7beef 00000001 00000006
0010: 00000001 00000001 00000001 00000057
0020: 00000033 00000001 00000030 7265736f
0030: 75726365 20627573 793a204c 6f636b73
0040: 70616365 20726573 6f757263 65202761
0050: 62272069 73206c6f 636b6564 00000002
0060: 00000000 00000001 00000011 7265736f
0070: 75726365 20627573 793a2025 73000000
0080: 00000001 00000021 4c6f636b 73706163
0090: 65207265 736f7572 63652027 61622720
00a0: 6973206c 6f636b65 64000000 00000000
00b0: ffffffff ffffffff 00000000")
    );
}

#[test]
fn appendix_a_pong() {
    assert_eq!(
        encode(pong()),
        hex("0000: 0000001c 6b656570 00000001 00000002\n0010: 00000002 00000000 00000000")
    );
}

/// observed-behaviour §3: the 128-byte reply to procedure 9.
#[test]
fn unknown_procedure_reply_is_128_bytes() {
    let err = RemoteError::rpc("unknown procedure: 9");
    let mut h = call_header(Procedure::Register, 5);
    h.proc_ = 9;
    let bytes = encode(error_reply(&h, &err));
    assert_eq!(bytes.len(), 128);
    assert_eq!(&bytes[..4], &[0, 0, 0, 0x80]);
}

fn frame(prog: u32, vers: u32, proc_: i32, msg_type: i32, st: i32, payload: &[u8]) -> Frame {
    Frame {
        header: Header {
            prog,
            vers,
            proc_,
            msg_type,
            serial: 5,
            status: st,
        },
        payload: Bytes::copy_from_slice(payload),
    }
}

#[test]
fn dispatch_rules() {
    let p = lock::PROGRAM;
    let r = |f| route(f, p, 1);
    assert_eq!(
        r(frame(KEEPALIVE_PROGRAM, 1, 1, msg_type::MESSAGE, 0, &[])),
        Route::Ping
    );
    assert_eq!(
        r(frame(KEEPALIVE_PROGRAM, 1, 2, msg_type::MESSAGE, 0, &[])),
        Route::Ignore
    );
    match r(frame(KEEPALIVE_PROGRAM, 1, 1, msg_type::CALL, 0, &[])) {
        Route::Reject(e) => assert_eq!(e.message, "Cannot find program 1801807216 version 1"),
        other => panic!("{other:?}"),
    }
    match r(frame(0x2000_8086, 1, 1, msg_type::CALL, 0, &[])) {
        Route::Reject(e) => {
            assert_eq!(e.message, "Cannot find program 536903814 version 1");
            assert_eq!((e.code, e.domain), (39, 7));
        }
        other => panic!("{other:?}"),
    }
    match r(frame(p, 2, 1, msg_type::CALL, 0, &[])) {
        Route::Reject(e) => assert_eq!(e.message, "Cannot find program 245874415 version 2"),
        other => panic!("{other:?}"),
    }
    // libvirt prints program and version as signed 32-bit integers (`%d`).
    for (prog, vers, want) in [
        (p, u32::MAX, "Cannot find program 245874415 version -1"),
        (u32::MAX, 1, "Cannot find program -1 version 1"),
        (0x8000_0000, 1, "Cannot find program -2147483648 version 1"),
    ] {
        match r(frame(prog, vers, 1, msg_type::CALL, 0, &[])) {
            Route::Reject(e) => assert_eq!(e.message, want),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        r(frame(0x2000_8086, 1, 1, msg_type::REPLY, 0, &[])),
        Route::Ignore
    );
    for t in [1, 2, 3, 5, 6, 99] {
        assert_eq!(r(frame(p, 1, 1, t, 0, &[])), Route::Ignore, "type {t}");
    }
    for st in [1, 2] {
        match r(frame(p, 1, 1, msg_type::CALL, st, &[])) {
            Route::Reject(e) => assert_eq!(e.message, format!("Unexpected message status {st}")),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        r(frame(p, 1, 1, msg_type::CALL_WITH_FDS, 0, &[0, 0, 0, 0, 7])),
        Route::Call {
            payload: Bytes::from_static(&[7])
        }
    );
    assert!(matches!(
        r(frame(p, 1, 1, msg_type::CALL_WITH_FDS, 0, &[0, 0, 0, 33])),
        Route::Close(_)
    ));
    assert!(matches!(
        r(frame(p, 1, 1, msg_type::CALL_WITH_FDS, 0, &[])),
        Route::Close(_)
    ));
}
