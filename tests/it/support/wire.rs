//! Packets of libvirt's RPC written independently of the crate's encoder, and
//! raw connections that send them and check the exact bytes that come back.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;

use virtlockd::protocol::lock::PROGRAM;

/// libvirt's admin program and the keepalive program.
pub const ADMIN_PROGRAM: u32 = 0x0690_0690;
pub const KEEPALIVE: u32 = 0x6b65_6570;

/// Packet types.
pub const CALL: i32 = 0;
pub const REPLY: i32 = 1;
pub const MESSAGE: i32 = 2;
pub const STREAM: i32 = 3;
pub const CALL_WITH_FDS: i32 = 4;
pub const REPLY_WITH_FDS: i32 = 5;
pub const STREAM_HOLE: i32 = 6;

/// Lock-program procedures.
pub const REGISTER: i32 = 1;
pub const ACQUIRE: i32 = 6;
pub const CREATE_LOCKSPACE: i32 = 8;

/// The keepalive PONG, always the same bytes.
pub const EXACT_PONG: &str = "0000001c 6b656570 00000001 00000002 00000002 00000000 00000000";

/// Hex words ("0000001c 0ea7beef ...") to bytes.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
    out.resize(out.len() + (4 - s.len() % 4) % 4, 0);
}

pub fn packet(
    prog: u32,
    vers: u32,
    proc_: i32,
    ty: i32,
    serial: u32,
    status: i32,
    payload: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(28 + payload.len());
    put_u32(&mut p, (28 + payload.len()) as u32);
    for w in [prog, vers, proc_ as u32, ty as u32, serial, status as u32] {
        put_u32(&mut p, w);
    }
    p.extend_from_slice(payload);
    p
}

/// A lock-program CALL with status OK.
pub fn call(proc_: i32, serial: u32, payload: &[u8]) -> Vec<u8> {
    packet(PROGRAM, 1, proc_, CALL, serial, 0, payload)
}

pub fn register_args(pid: u32) -> Vec<u8> {
    let mut p = vec![0x11; 16];
    put_string(&mut p, b"vm1");
    put_u32(&mut p, 1);
    put_u32(&mut p, pid);
    put_u32(&mut p, 0);
    p
}

pub fn path_args(path: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    put_string(&mut p, path);
    p
}

pub fn acquire_args(path: &[u8], name: &[u8], flags: u32) -> Vec<u8> {
    let mut p = Vec::new();
    put_string(&mut p, path);
    put_string(&mut p, name);
    put_u32(&mut p, flags);
    p
}

/// The exact void success reply.
pub fn ok_reply(prog: u32, proc_: i32, serial: u32) -> Vec<u8> {
    packet(prog, 1, proc_, REPLY, serial, 0, &[])
}

/// The exact error reply for an error of the RPC layer (code 39, domain 7):
/// message, level 2, no dom, str1 "%s", str2 = message, no str3, -1, -1, no net.
pub fn rpc_error_reply(prog: u32, vers: u32, proc_: i32, serial: u32, message: &str) -> Vec<u8> {
    generic_error_reply(prog, vers, proc_, serial, 39, 7, "%s", message)
}

#[allow(clippy::too_many_arguments)]
pub fn generic_error_reply(
    prog: u32,
    vers: u32,
    proc_: i32,
    serial: u32,
    code: u32,
    domain: u32,
    template: &str,
    detail: &str,
) -> Vec<u8> {
    let message = template.replacen("%s", detail, 1);
    let mut e = Vec::new();
    put_u32(&mut e, code);
    put_u32(&mut e, domain);
    put_u32(&mut e, 1);
    put_string(&mut e, message.as_bytes());
    put_u32(&mut e, 2); // level
    put_u32(&mut e, 0); // dom
    put_u32(&mut e, 1);
    put_string(&mut e, template.as_bytes());
    put_u32(&mut e, 1);
    put_string(&mut e, detail.as_bytes());
    put_u32(&mut e, 0); // str3
    put_u32(&mut e, u32::MAX); // int1 = -1
    put_u32(&mut e, u32::MAX); // int2 = -1
    put_u32(&mut e, 0); // net
    packet(prog, vers, proc_, REPLY, serial, 1, &e)
}

/// 55/7 "lock owner details have not been registered" (244 bytes for ACQUIRE).
pub fn not_registered_reply(proc_: i32, serial: u32) -> Vec<u8> {
    generic_error_reply(
        PROGRAM,
        1,
        proc_,
        serial,
        55,
        7,
        "Requested operation is not valid: %s",
        "lock owner details have not been registered",
    )
}

pub fn decode_error(proc_: i32, serial: u32) -> Vec<u8> {
    rpc_error_reply(
        PROGRAM,
        1,
        proc_,
        serial,
        "Unable to decode message payload",
    )
}

/// How long a raw reply or close may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// Connects like a blocking connect(): retries while the backlog is full.
pub async fn connect(path: &Path) -> UnixStream {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("connect {}: {e}; retrying", path.display());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("connect {}: {e}", path.display()),
        }
    }
}

pub async fn send(s: &mut UnixStream, data: &[u8]) {
    s.write_all(data).await.expect("write");
}

/// Reads one whole packet; `None` if the daemon closed the connection first.
pub async fn read_packet(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    match timeout(WAIT, s.read_exact(&mut len)).await {
        Err(_) => panic!("no reply within {WAIT:?}"),
        Ok(Err(_)) => return None,
        Ok(Ok(_)) => {}
    }
    let total = u32::from_be_bytes(len) as usize;
    assert!((28..=1 << 20).contains(&total), "bad reply length {total}");
    let mut p = len.to_vec();
    p.resize(total, 0);
    timeout(WAIT, s.read_exact(&mut p[4..]))
        .await
        .expect("rest of the reply")
        .expect("rest of the reply");
    Some(p)
}

/// Reads one packet and asserts it is exactly `want`.
pub async fn expect_packet(s: &mut UnixStream, want: &[u8]) {
    let got = read_packet(s)
        .await
        .expect("connection closed, reply expected");
    assert_eq!(hex_of(&got), hex_of(want));
}

pub fn hex_of(b: &[u8]) -> String {
    b.chunks(4)
        .map(|w| w.iter().map(|x| format!("{x:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts the daemon closes the connection without writing anything.
pub async fn expect_closed(s: &mut UnixStream) {
    let mut buf = [0u8; 64];
    match timeout(WAIT, s.read(&mut buf)).await {
        Err(_) => panic!("connection not closed within {WAIT:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a close, got {n} bytes: {}", hex_of(&buf[..n])),
    }
}

/// Asserts nothing arrives (and the connection stays open) for a while.
pub async fn expect_quiet(s: &mut UnixStream, d: Duration) {
    let mut buf = [0u8; 64];
    match timeout(d, s.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("connection closed, expected it to stay open"),
        Ok(Ok(n)) => panic!("expected silence, got {n} bytes: {}", hex_of(&buf[..n])),
        Ok(Err(e)) => panic!("expected silence, got {e}"),
    }
}
