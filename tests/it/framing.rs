//! Wire framing and dispatch rules against the real daemon (spec §2.2-§2.6, §4, §10,
//! observed §3 and S13): exact reply bytes, ignored packet types, decode errors,
//! fatal lengths, pipelining, split writes, keepalive and the admin socket. Every
//! test that upsets a connection also checks that the daemon still serves others.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::time::timeout;

use virtlockd::client::owner;
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, PROGRAM};

use crate::support::wire::*;
use crate::support::{bytes, Daemon};

/// A fake owner pid (never the test runner's own).
const PID: u32 = 4_000_001;

// ---------------------------------------------------------------------------------
// Connections the daemon must still serve.

/// Proves a connection is still usable: a REGISTER with `serial` is answered.
async fn expect_usable(s: &mut UnixStream, serial: u32) {
    send(s, &call(REGISTER, serial, &register_args(PID))).await;
    expect_packet(s, &ok_reply(PROGRAM, REGISTER, serial)).await;
}

/// Proves the daemon serves a fresh client.
async fn expect_daemon_serves(d: &Daemon) {
    let mut c = timeout(WAIT, d.client()).await.expect("connect in time");
    timeout(WAIT, c.ping())
        .await
        .expect("pong in time")
        .expect("pong");
    let ls = d.base().join("alive");
    timeout(WAIT, async {
        c.register(&owner("vm", 1, PID)).await.unwrap();
        c.create_lockspace(&bytes(&ls)).await.unwrap();
        c.acquire(&bytes(&ls), b"r", ACQUIRE_AUTOCREATE)
            .await
            .unwrap();
        c.release(&bytes(&ls), b"r").await.unwrap();
    })
    .await
    .expect("calls answered in time");
}

// ---------------------------------------------------------------------------------
// Replies and serials.

#[tokio::test]
async fn serial_ffffffff_is_echoed_in_an_exact_28_byte_reply() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    send(&mut s, &call(REGISTER, 0xffff_ffff, &register_args(PID))).await;
    expect_packet(
        &mut s,
        &hex("0000001c 0ea7beef 00000001 00000001 00000001 ffffffff 00000000"),
    )
    .await;
    expect_usable(&mut s, 0).await;
}

#[tokio::test]
async fn appendix_a_vectors() {
    // spec Appendix A: REGISTER call bytes, its reply, and the 188-byte busy error.
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let mut holder = d.client().await;
    holder.register(&owner("holder", 1, PID)).await.unwrap();
    holder.create_lockspace(&bytes(&ls)).await.unwrap();
    holder
        .acquire(&bytes(&ls), b"ab", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();

    let mut s = connect(&d.socket()).await;
    send(
        &mut s,
        &hex("00000040 0ea7beef 00000001 00000001
             00000000 00000000 00000000 00112233
             44556677 8899aabb ccddeeff 00000003
             766d3100 00000001 000004d2 00000000"),
    )
    .await;
    expect_packet(
        &mut s,
        &hex("0000001c 0ea7beef 00000001 00000001 00000001 00000000 00000000"),
    )
    .await;
    send(
        &mut s,
        &call(
            ACQUIRE,
            1,
            &acquire_args(&bytes(&ls), b"ab", ACQUIRE_AUTOCREATE),
        ),
    )
    .await;
    let busy = hex("000000bc 0ea7beef 00000001 00000006
         00000001 00000001 00000001 00000057
         00000033 00000001 00000030 7265736f
         75726365 20627573 793a204c 6f636b73
         70616365 20726573 6f757263 65202761
         62272069 73206c6f 636b6564 00000002
         00000000 00000001 00000011 7265736f
         75726365 20627573 793a2025 73000000
         00000001 00000021 4c6f636b 73706163
         65207265 736f7572 63652027 61622720
         6973206c 6f636b65 64000000 00000000
         ffffffff ffffffff 00000000");
    assert_eq!(busy.len(), 188);
    expect_packet(&mut s, &busy).await;
    // Cross-check the independent encoder used by the other tests.
    assert_eq!(
        busy,
        generic_error_reply(
            PROGRAM,
            1,
            ACQUIRE,
            1,
            87,
            51,
            "resource busy: %s",
            "Lockspace resource 'ab' is locked"
        )
    );
    holder.release(&bytes(&ls), b"ab").await.unwrap();
}

#[tokio::test]
async fn wrong_program_and_wrong_version_are_refused() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let unknown = "Cannot find program 536903814 version 1";
    assert_eq!(rpc_error_reply(0x2000_8086, 1, 1, 5, unknown).len(), 168);
    let wrong_version = "Cannot find program 245874415 version 2";
    assert_eq!(rpc_error_reply(PROGRAM, 2, 1, 5, wrong_version).len(), 168);
    let mut fds0 = vec![0, 0, 0, 0];
    fds0.extend(register_args(PID));
    // (packet sent, its program, version, procedure and serial, the error text)
    let rows = [
        (
            packet(0x2000_8086, 1, 1, CALL, 5, 0, &register_args(PID)),
            0x2000_8086,
            1,
            1,
            5,
            unknown,
        ),
        (
            packet(PROGRAM, 2, 1, CALL, 5, 0, &register_args(PID)),
            PROGRAM,
            2,
            1,
            5,
            wrong_version,
        ),
        // CALL_WITH_FDS to an unknown program is refused the same way.
        (
            packet(0x2000_8086, 1, 1, CALL_WITH_FDS, 6, 0, &fds0),
            0x2000_8086,
            1,
            1,
            6,
            unknown,
        ),
        // The program lookup comes before the status check.
        (
            packet(0x2000_8086, 1, 1, CALL, 7, 1, &[]),
            0x2000_8086,
            1,
            1,
            7,
            unknown,
        ),
        // The admin program is not served on the lock socket.
        (
            packet(ADMIN_PROGRAM, 1, 3, CALL, 8, 0, &[]),
            ADMIN_PROGRAM,
            1,
            3,
            8,
            "Cannot find program 110102160 version 1",
        ),
    ];
    for (sent, prog, vers, proc_, serial, text) in rows {
        send(&mut s, &sent).await;
        expect_packet(&mut s, &rpc_error_reply(prog, vers, proc_, serial, text)).await;
    }
    expect_usable(&mut s, 9).await;
}

#[tokio::test]
async fn unknown_program_and_version_are_printed_signed_as_libvirt_does() {
    // libvirt formats both with `%d`; the first row is the issue's exact frame:
    // CREATE_LOCKSPACE "" with version 0xFFFFFFFF, a 168-byte reply.
    let d = Daemon::start();
    for (socket, prog, vers, text) in [
        (
            d.socket(),
            PROGRAM,
            u32::MAX,
            "Cannot find program 245874415 version -1",
        ),
        (d.socket(), u32::MAX, 1, "Cannot find program -1 version 1"),
        (
            d.socket(),
            0x8000_0000,
            1,
            "Cannot find program -2147483648 version 1",
        ),
        (
            d.admin_socket(),
            ADMIN_PROGRAM,
            u32::MAX,
            "Cannot find program 110102160 version -1",
        ),
    ] {
        let mut s = connect(&socket).await;
        send(&mut s, &packet(prog, vers, 8, CALL, 1, 0, &path_args(b""))).await;
        let want = rpc_error_reply(prog, vers, 8, 1, text);
        expect_packet(&mut s, &want).await;
        // The connection stays open.
        send(&mut s, &packet(KEEPALIVE, 1, 1, MESSAGE, 0, 0, &[])).await;
        expect_packet(&mut s, &hex(EXACT_PONG)).await;
    }
    let mut s = connect(&d.socket()).await;
    send(
        &mut s,
        &hex("00000020 0ea7beef ffffffff 00000008 00000000 00000001 00000000 00000000"),
    )
    .await;
    let want = rpc_error_reply(
        PROGRAM,
        u32::MAX,
        8,
        1,
        "Cannot find program 245874415 version -1",
    );
    assert_eq!(want.len(), 168);
    expect_packet(&mut s, &want).await;
}

#[tokio::test]
async fn non_call_packets_to_unknown_programs_are_dropped() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    for (i, ty) in [REPLY, MESSAGE, STREAM, REPLY_WITH_FDS, STREAM_HOLE, 99]
        .into_iter()
        .enumerate()
    {
        send(&mut s, &packet(0x2000_8086, 1, 1, ty, 5, 0, &[])).await;
        // The next reply answers the following call: nothing was written for the drop.
        expect_usable(&mut s, 100 + i as u32).await;
    }
}

#[tokio::test]
async fn keepalive_program_as_a_call_is_an_unknown_program() {
    // spec §4: keepalive packets of other types fall through to normal dispatch.
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    send(&mut s, &packet(KEEPALIVE, 1, 1, CALL, 3, 0, &[])).await;
    expect_packet(
        &mut s,
        &rpc_error_reply(
            KEEPALIVE,
            1,
            1,
            3,
            "Cannot find program 1801807216 version 1",
        ),
    )
    .await;
    // PONG, unknown keepalive procedures and other non-CALL types are ignored.
    for (i, (proc_, ty)) in [
        (2, MESSAGE),
        (3, MESSAGE),
        (0, MESSAGE),
        (1, REPLY),
        (1, STREAM),
    ]
    .into_iter()
    .enumerate()
    {
        send(&mut s, &packet(KEEPALIVE, 1, proc_, ty, 0, 0, &[])).await;
        expect_usable(&mut s, 10 + i as u32).await;
    }
    // Keepalive version 2 is not keepalive.
    send(&mut s, &packet(KEEPALIVE, 2, 1, MESSAGE, 0, 0, &[])).await;
    expect_usable(&mut s, 20).await;
}

#[tokio::test]
async fn unknown_procedures() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    for (proc_, len) in [
        (0, 128),
        (9, 128),
        (-1, 136),
        (i32::MAX, 152),
        (i32::MIN, 152),
    ] {
        send(&mut s, &call(proc_, 5, &[])).await;
        let want = rpc_error_reply(PROGRAM, 1, proc_, 5, &format!("unknown procedure: {proc_}"));
        assert_eq!(want.len(), len, "proc {proc_}");
        expect_packet(&mut s, &want).await;
    }
    // The observed vector for proc 9, byte for byte.
    let mut want = hex(
        "00000080 0ea7beef 00000001 00000009 00000001 00000005 00000001
         00000027 00000007 00000001 00000014",
    );
    want.extend_from_slice(b"unknown procedure: 9");
    want.extend(hex("00000002 00000000 00000001 00000002"));
    want.extend_from_slice(b"%s\0\0");
    want.extend(hex("00000001 00000014"));
    want.extend_from_slice(b"unknown procedure: 9");
    want.extend(hex("00000000 ffffffff ffffffff 00000000"));
    send(&mut s, &call(9, 5, &register_args(PID))).await;
    expect_packet(&mut s, &want).await;
    expect_usable(&mut s, 6).await;
}

#[tokio::test]
async fn non_call_types_get_no_reply_and_keep_the_connection() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    for (i, ty) in [REPLY, MESSAGE, STREAM, REPLY_WITH_FDS, STREAM_HOLE, 99, -1]
        .into_iter()
        .enumerate()
    {
        send(
            &mut s,
            &packet(PROGRAM, 1, REGISTER, ty, 5, 0, &register_args(PID)),
        )
        .await;
        // The very next packet read answers the call sent afterwards.
        expect_usable(&mut s, 100 + i as u32).await;
    }
    // A dropped REGISTER did not register: ACQUIRE says so.
    let mut fresh = connect(&d.socket()).await;
    send(
        &mut fresh,
        &packet(PROGRAM, 1, REGISTER, MESSAGE, 1, 0, &register_args(PID)),
    )
    .await;
    send(&mut fresh, &call(ACQUIRE, 2, &acquire_args(b"", b"/x", 0))).await;
    expect_packet(&mut fresh, &not_registered_reply(ACQUIRE, 2)).await;
}

#[tokio::test]
async fn call_with_fds_and_zero_fds_works_like_call() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let mut payload = vec![0, 0, 0, 0];
    payload.extend(register_args(PID));
    send(
        &mut s,
        &packet(PROGRAM, 1, REGISTER, CALL_WITH_FDS, 5, 0, &payload),
    )
    .await;
    expect_packet(&mut s, &ok_reply(PROGRAM, REGISTER, 5)).await;
    // Errors are replied as type REPLY too.
    send(
        &mut s,
        &packet(PROGRAM, 1, 9, CALL_WITH_FDS, 6, 0, &[0, 0, 0, 0]),
    )
    .await;
    expect_packet(
        &mut s,
        &rpc_error_reply(PROGRAM, 1, 9, 6, "unknown procedure: 9"),
    )
    .await;
    expect_usable(&mut s, 7).await;
}

#[tokio::test]
async fn call_with_more_than_32_fds_closes_the_connection() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let mut payload = 33u32.to_be_bytes().to_vec();
    payload.extend(register_args(PID));
    send(
        &mut s,
        &packet(PROGRAM, 1, REGISTER, CALL_WITH_FDS, 5, 0, &payload),
    )
    .await;
    expect_closed(&mut s).await;
    expect_daemon_serves(&d).await;
}

#[tokio::test]
async fn call_with_a_non_ok_status_is_refused() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    for st in [1, 2, 3, -1] {
        send(
            &mut s,
            &packet(PROGRAM, 1, REGISTER, CALL, 5, st, &register_args(PID)),
        )
        .await;
        let want = rpc_error_reply(
            PROGRAM,
            1,
            REGISTER,
            5,
            &format!("Unexpected message status {}", st as u32),
        );
        if st == 1 || st == 2 {
            assert_eq!(want.len(), 144);
        }
        expect_packet(&mut s, &want).await;
    }
    // The status check comes before the procedure lookup.
    send(&mut s, &packet(PROGRAM, 1, 9, CALL, 6, 1, &[])).await;
    expect_packet(
        &mut s,
        &rpc_error_reply(PROGRAM, 1, 9, 6, "Unexpected message status 1"),
    )
    .await;
    // The refused REGISTERs did not register.
    send(&mut s, &call(ACQUIRE, 7, &acquire_args(b"", b"/x", 0))).await;
    expect_packet(&mut s, &not_registered_reply(ACQUIRE, 7)).await;
    expect_usable(&mut s, 8).await;
}

// ---------------------------------------------------------------------------------
// Argument decoding.

#[tokio::test]
async fn truncated_and_empty_payloads_are_decode_errors_and_keep_the_connection() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let args = register_args(PID);
    for cut in [0, 10, 16, 20, args.len() - 1] {
        send(&mut s, &call(REGISTER, 5, &args[..cut])).await;
        let want = decode_error(REGISTER, 5);
        assert_eq!(want.len(), 152);
        expect_packet(&mut s, &want).await;
    }
    // Other procedures too (RESTRICT needs its flags word, CREATE_LOCKSPACE a string).
    for proc_ in 2..=8 {
        send(&mut s, &call(proc_, 6, &[])).await;
        expect_packet(&mut s, &decode_error(proc_, 6)).await;
    }
    expect_usable(&mut s, 7).await;
}

#[tokio::test]
async fn header_only_register_of_length_28_is_a_decode_error() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let p = call(REGISTER, 5, &[]);
    assert_eq!(p.len(), 28);
    send(&mut s, &p).await;
    expect_packet(&mut s, &decode_error(REGISTER, 5)).await;
    expect_usable(&mut s, 6).await;
}

#[tokio::test]
async fn trailing_bytes_after_the_arguments_are_ignored() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let mut args = register_args(PID);
    args.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
    send(&mut s, &call(REGISTER, 5, &args)).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, REGISTER, 5)).await;
    // An odd number of trailing bytes too.
    let ls = d.base().join("ls");
    let mut args = path_args(&bytes(&ls));
    args.push(0x77);
    send(&mut s, &call(CREATE_LOCKSPACE, 6, &args)).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, CREATE_LOCKSPACE, 6)).await;
    assert!(ls.is_dir());
}

#[tokio::test]
async fn oversized_string_lengths_are_decode_errors() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    // Declared lengths over 65536 with no data behind them.
    for declared in [65537u32, 1 << 20, u32::MAX] {
        send(&mut s, &call(CREATE_LOCKSPACE, 5, &declared.to_be_bytes())).await;
        expect_packet(&mut s, &decode_error(CREATE_LOCKSPACE, 5)).await;
    }
    // 65537 bytes actually sent.
    let long = vec![b'a'; 65537];
    send(&mut s, &call(CREATE_LOCKSPACE, 6, &path_args(&long))).await;
    expect_packet(&mut s, &decode_error(CREATE_LOCKSPACE, 6)).await;
    // Exactly 65536 bytes is within the protocol: it reaches mkdir, which refuses.
    let max = format!("/{}", "a".repeat(65535));
    send(
        &mut s,
        &call(CREATE_LOCKSPACE, 7, &path_args(max.as_bytes())),
    )
    .await;
    let reply = read_packet(&mut s).await.unwrap();
    let err = virtlockd::protocol::RemoteError::decode(&reply[28..]).unwrap();
    assert_eq!(
        (err.code, err.domain, err.int1, err.message),
        (
            38,
            51,
            libc::ENAMETOOLONG,
            format!("Unable to create lockspace {max}: File name too long")
        )
    );
    // The connection is still good.
    expect_usable(&mut s, 8).await;
    let ls = d.base().join("ls");
    send(&mut s, &call(CREATE_LOCKSPACE, 9, &path_args(&bytes(&ls)))).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, CREATE_LOCKSPACE, 9)).await;
    send(
        &mut s,
        &call(
            ACQUIRE,
            10,
            &acquire_args(&bytes(&ls), b"r", ACQUIRE_AUTOCREATE),
        ),
    )
    .await;
    expect_packet(&mut s, &ok_reply(PROGRAM, ACQUIRE, 10)).await;
    assert!(ls.join("r").exists());
}

#[tokio::test]
async fn embedded_nul_cuts_the_string() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let ls = d.base().join("nul");
    let mut path = bytes(&ls);
    path.extend_from_slice(b"\0junk");
    send(&mut s, &call(CREATE_LOCKSPACE, 5, &path_args(&path))).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, CREATE_LOCKSPACE, 5)).await;
    assert!(ls.is_dir());
    // The lockspace is known under the cut name.
    let mut c = d.client().await;
    c.register(&owner("vm", 1, PID)).await.unwrap();
    c.acquire(&bytes(&ls), b"r", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    assert!(ls.join("r").exists());
    c.release(&bytes(&ls), b"r").await.unwrap();
}

#[tokio::test]
async fn non_zero_xdr_padding_is_accepted() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    // A path whose length is not a multiple of 4, so that it has padding.
    let mut ls = d.base().join("pad");
    if bytes(&ls).len() % 4 == 0 {
        ls = d.base().join("pads");
    }
    let path = bytes(&ls);
    let mut args = Vec::new();
    put_u32(&mut args, path.len() as u32);
    args.extend_from_slice(&path);
    args.resize(args.len() + (4 - path.len() % 4), 0xff);
    send(&mut s, &call(CREATE_LOCKSPACE, 5, &args)).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, CREATE_LOCKSPACE, 5)).await;
    assert!(ls.is_dir());
    // Padding inside an owner name, followed by more fields.
    let mut reg = vec![0x22; 16];
    put_u32(&mut reg, 1);
    reg.extend_from_slice(&[b'v', 0xab, 0xcd, 0xef]);
    put_u32(&mut reg, 1);
    put_u32(&mut reg, PID);
    put_u32(&mut reg, 0);
    send(&mut s, &call(REGISTER, 6, &reg)).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, REGISTER, 6)).await;
}

// ---------------------------------------------------------------------------------
// Fatal framing.

#[tokio::test]
async fn short_length_words_close_the_connection_without_reply() {
    let d = Daemon::start();
    for len in [0u32, 3, 4, 8, 27] {
        let mut s = connect(&d.socket()).await;
        let mut p = len.to_be_bytes().to_vec();
        // The rest of the announced packet, as far as there is one.
        p.resize(len.max(4) as usize, 0);
        send(&mut s, &p).await;
        expect_closed(&mut s).await;
    }
    expect_daemon_serves(&d).await;
}

#[tokio::test]
async fn over_32_mib_length_words_close_the_connection_without_reply() {
    let d = Daemon::start();
    for len in [33_554_437u32, 0x8000_0000, u32::MAX] {
        let mut s = connect(&d.socket()).await;
        let mut p = len.to_be_bytes().to_vec();
        p.extend_from_slice(&call(REGISTER, 5, &[])[4..]);
        send(&mut s, &p).await;
        expect_closed(&mut s).await;
    }
    expect_daemon_serves(&d).await;
}

#[tokio::test]
async fn a_32_mib_packet_still_arriving_blocks_only_its_own_connection() {
    // Observed: the maximum length is accepted and the daemon waits for the bytes.
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let mut p = 33_554_436u32.to_be_bytes().to_vec();
    p.extend_from_slice(&call(REGISTER, 5, &[])[4..]);
    send(&mut s, &p).await;
    expect_daemon_serves(&d).await;
    expect_quiet(&mut s, Duration::from_millis(300)).await;
    drop(s);
    expect_daemon_serves(&d).await;
}

// ---------------------------------------------------------------------------------
// Stream handling.

#[tokio::test]
async fn pipelined_calls_are_answered_in_order() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let ls = d.base().join("ls");
    let mut all = call(CREATE_LOCKSPACE, 10, &path_args(&bytes(&ls)));
    all.extend(call(ACQUIRE, 11, &acquire_args(&bytes(&ls), b"r", 0)));
    all.extend(call(REGISTER, 12, &register_args(PID)));
    send(&mut s, &all).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, CREATE_LOCKSPACE, 10)).await;
    let not_registered = not_registered_reply(ACQUIRE, 11);
    assert_eq!(not_registered.len(), 244);
    expect_packet(&mut s, &not_registered).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, REGISTER, 12)).await;
    // A longer pipeline mixing calls, ignored packets and a PING.
    let mut all = Vec::new();
    for i in 0..20u32 {
        all.extend(call(
            ACQUIRE,
            100 + 2 * i,
            &acquire_args(&bytes(&ls), b"p", ACQUIRE_AUTOCREATE),
        ));
        all.extend(packet(PROGRAM, 1, REGISTER, MESSAGE, 7, 0, &[]));
        all.extend(call(7, 101 + 2 * i, &acquire_args(&bytes(&ls), b"p", 0)));
    }
    all.extend(packet(KEEPALIVE, 1, 1, MESSAGE, 0, 0, &[]));
    send(&mut s, &all).await;
    for i in 0..20u32 {
        expect_packet(&mut s, &ok_reply(PROGRAM, ACQUIRE, 100 + 2 * i)).await;
        expect_packet(&mut s, &ok_reply(PROGRAM, 7, 101 + 2 * i)).await;
    }
    expect_packet(&mut s, &hex(EXACT_PONG)).await;
    assert!(!ls.join("p").exists());
}

#[tokio::test]
async fn a_call_written_byte_by_byte_is_answered() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    let p = call(REGISTER, 13, &register_args(PID));
    // Deliberate pauses between the writes: each byte arrives on its own.
    for b in &p {
        send(&mut s, std::slice::from_ref(b)).await;
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    expect_packet(&mut s, &ok_reply(PROGRAM, REGISTER, 13)).await;
    // Two packets split across writes at odd places.
    let mut two = call(REGISTER, 14, &register_args(PID));
    two.extend(call(REGISTER, 15, &register_args(PID)));
    for chunk in two.chunks(7) {
        send(&mut s, chunk).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    expect_packet(&mut s, &ok_reply(PROGRAM, REGISTER, 14)).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, REGISTER, 15)).await;
}

#[tokio::test]
async fn keepalive_ping_gets_the_exact_pong() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    send(&mut s, &packet(KEEPALIVE, 1, 1, MESSAGE, 0, 0, &[])).await;
    expect_packet(&mut s, &hex(EXACT_PONG)).await;
    // Serial and payload of the PING do not matter; the PONG is always the same.
    send(
        &mut s,
        &packet(KEEPALIVE, 1, 1, MESSAGE, 77, 0, &[1, 2, 3, 4]),
    )
    .await;
    expect_packet(&mut s, &hex(EXACT_PONG)).await;
    // PING before registration, between calls, and after RESTRICT.
    expect_usable(&mut s, 1).await;
    send(&mut s, &call(2, 2, &0u32.to_be_bytes())).await;
    expect_packet(&mut s, &ok_reply(PROGRAM, 2, 2)).await;
    send(&mut s, &packet(KEEPALIVE, 1, 1, MESSAGE, 0, 0, &[])).await;
    expect_packet(&mut s, &hex(EXACT_PONG)).await;
}

#[tokio::test]
async fn idle_connections_are_not_timed_out_and_get_no_pings() {
    let d = Daemon::start();
    let mut s = connect(&d.socket()).await;
    expect_usable(&mut s, 0).await;
    expect_quiet(&mut s, Duration::from_millis(1500)).await;
    expect_usable(&mut s, 1).await;
}

#[tokio::test]
async fn a_client_vanishing_mid_message_does_not_disturb_others() {
    let d = Daemon::start();
    let mut other = connect(&d.socket()).await;
    expect_usable(&mut other, 0).await;
    let whole = call(REGISTER, 5, &register_args(PID));
    // Half a packet, then gone.
    let mut gone = connect(&d.socket()).await;
    send(&mut gone, &whole[..whole.len() / 2]).await;
    drop(gone);
    // Only the length word, then gone.
    let mut gone = connect(&d.socket()).await;
    send(&mut gone, &whole[..4]).await;
    drop(gone);
    // Half a packet and stalled, while others are served.
    let mut stalled = connect(&d.socket()).await;
    send(&mut stalled, &whole[..whole.len() / 2]).await;
    expect_usable(&mut other, 1).await;
    expect_daemon_serves(&d).await;
    // The stalled one completes its packet later and gets its answer.
    send(&mut stalled, &whole[whole.len() / 2..]).await;
    expect_packet(&mut stalled, &ok_reply(PROGRAM, REGISTER, 5)).await;
    // A client that sends a call and leaves without reading the reply.
    let mut rude = connect(&d.socket()).await;
    send(&mut rude, &call(REGISTER, 6, &register_args(PID))).await;
    drop(rude);
    expect_usable(&mut other, 2).await;
    expect_daemon_serves(&d).await;
}

// ---------------------------------------------------------------------------------
// The admin socket.

#[tokio::test]
async fn admin_socket_answers_unknown_procedures_and_pings() {
    let d = Daemon::start();
    let mut s = connect(&d.admin_socket()).await;
    // 21 is past the last admin procedure (20, daemon shutdown).
    send(&mut s, &packet(ADMIN_PROGRAM, 1, 21, CALL, 7, 0, &[])).await;
    expect_packet(
        &mut s,
        &rpc_error_reply(ADMIN_PROGRAM, 1, 21, 7, "unknown procedure: 21"),
    )
    .await;
    send(&mut s, &packet(KEEPALIVE, 1, 1, MESSAGE, 0, 0, &[])).await;
    expect_packet(&mut s, &hex(EXACT_PONG)).await;
    // The lock program is not served on the admin socket.
    send(&mut s, &call(REGISTER, 8, &register_args(PID))).await;
    expect_packet(
        &mut s,
        &rpc_error_reply(
            PROGRAM,
            1,
            REGISTER,
            8,
            "Cannot find program 245874415 version 1",
        ),
    )
    .await;
    // Non-CALL packets are dropped; the connection stays usable.
    send(&mut s, &packet(ADMIN_PROGRAM, 1, 21, MESSAGE, 9, 0, &[])).await;
    send(&mut s, &packet(ADMIN_PROGRAM, 1, 21, CALL, 10, 0, &[])).await;
    expect_packet(
        &mut s,
        &rpc_error_reply(ADMIN_PROGRAM, 1, 21, 10, "unknown procedure: 21"),
    )
    .await;
    // Malformed framing closes only that admin connection.
    let mut bad = connect(&d.admin_socket()).await;
    // One write: the daemon may close the connection as soon as it has read
    // the length word, and a second write would then fail.
    send(&mut bad, &[0, 0, 0, 8, 0, 0, 0, 0]).await;
    expect_closed(&mut bad).await;
    send(&mut s, &packet(KEEPALIVE, 1, 1, MESSAGE, 0, 0, &[])).await;
    expect_packet(&mut s, &hex(EXACT_PONG)).await;
    expect_daemon_serves(&d).await;
}
