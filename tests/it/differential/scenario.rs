//! The differential scenario: what every connection sends, step by step, and the
//! steps where our daemon deliberately answers differently from libvirt's (each
//! tied to a numbered fix of README's Compatibility section). Paths live under
//! [`BASE`], the same path inside each daemon's private mount namespace, so the
//! texts that quote them compare equal.

use bytes::BytesMut;
use virtlockd::client::owner;
use virtlockd::protocol::lock::{self, LockCall, ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};
use virtlockd::protocol::{msg_type, status};

/// Lockspaces and resources of the scenario (inside each namespace's tmpfs /run).
pub const BASE: &str = "/run/diff";

/// What one step does.
pub enum Act {
    /// A lock-program CALL with the connection's next serial.
    Call(LockCall),
    /// Bytes written as they are (malformed or unusual frames).
    Raw(Vec<u8>),
    /// The client closes this connection.
    Close,
    /// The test prepares a plain file at this path below [`BASE`].
    File(&'static str),
    /// The test prepares a directory at this path below [`BASE`].
    Dir(&'static str),
}

pub struct Step {
    pub label: String,
    pub conn: usize,
    pub act: Act,
}

/// Steps whose observations differ on purpose: (label prefix, README fix number).
pub const ALLOWED: &[(&str, u32)] = &[
    ("fix1 ", 1),
    ("fix3 ", 3),
    ("fix6 ", 6),
    ("fix9 ", 9),
    ("fix11 ", 11),
];

/// `BASE/rel` as the bytes a client sends.
fn p(rel: &str) -> Vec<u8> {
    format!("{BASE}/{rel}").into_bytes()
}

/// Fake owner pids: the daemons never signal them (they are not the peers).
fn reg(id: u32) -> LockCall {
    LockCall::Register {
        owner: owner(&format!("vm-{id}"), id, 4_000_000 + id),
        flags: 0,
    }
}

fn acquire(ls: &[u8], name: &[u8], flags: u32) -> LockCall {
    LockCall::Acquire {
        path: ls.to_vec().into(),
        name: name.to_vec().into(),
        flags,
    }
}

fn release(ls: &[u8], name: &[u8]) -> LockCall {
    LockCall::Release {
        path: ls.to_vec().into(),
        name: name.to_vec().into(),
        flags: 0,
    }
}

fn create_res(ls: &[u8], name: &[u8]) -> LockCall {
    LockCall::CreateResource {
        path: ls.to_vec().into(),
        name: name.to_vec().into(),
        flags: 0,
    }
}

fn delete_res(ls: &[u8], name: &[u8]) -> LockCall {
    LockCall::DeleteResource {
        path: ls.to_vec().into(),
        name: name.to_vec().into(),
        flags: 0,
    }
}

fn new_ls(path: &[u8], flags: u32) -> LockCall {
    LockCall::New {
        path: path.to_vec().into(),
        flags,
    }
}

fn create_ls(path: &[u8]) -> LockCall {
    LockCall::CreateLockspace {
        path: path.to_vec().into(),
    }
}

/// A frame with this header (length word computed) and payload.
fn frame(prog: u32, vers: u32, proc_: i32, kind: i32, st: i32, payload: &[u8]) -> Vec<u8> {
    crate::support::wire::packet(prog, vers, proc_, kind, 5, st, payload)
}

fn lock_frame(proc_: i32, kind: i32, st: i32, payload: &[u8]) -> Vec<u8> {
    frame(lock::PROGRAM, lock::VERSION, proc_, kind, st, payload)
}

fn payload(call: &LockCall) -> Vec<u8> {
    let mut b = BytesMut::new();
    call.encode(&mut b);
    b.to_vec()
}

/// Collects the steps with short helpers.
#[derive(Default)]
struct Script(Vec<Step>);

impl Script {
    fn step(&mut self, label: &str, conn: usize, act: Act) -> &mut Self {
        self.0.push(Step {
            label: label.to_owned(),
            conn,
            act,
        });
        self
    }

    fn call(&mut self, label: &str, conn: usize, call: LockCall) -> &mut Self {
        self.step(label, conn, Act::Call(call))
    }

    fn raw(&mut self, label: &str, conn: usize, bytes: Vec<u8>) -> &mut Self {
        self.step(label, conn, Act::Raw(bytes))
    }
}

/// The whole scenario. Connections are numbered; owner `n` has fake pid 4_000_000 + n.
pub fn steps() -> Vec<Step> {
    let mut s = Script::default();
    unregistered(&mut s);
    register_and_lockspaces(&mut s);
    acquire_release(&mut s);
    contention_and_sharing(&mut s);
    default_lockspace(&mut s);
    names(&mut s);
    restrict_and_disconnect(&mut s);
    framing(&mut s);
    deliberate_fixes(&mut s);
    s.0
}

fn unregistered(s: &mut Script) {
    s.call("RESTRICT unregistered", 0, LockCall::Restrict { flags: 0 })
        .call("NEW unregistered", 0, new_ls(&p("n0"), 0))
        .call(
            "CREATE_RESOURCE unregistered",
            0,
            create_res(&p("ls"), b"r"),
        )
        .call(
            "DELETE_RESOURCE unregistered",
            0,
            delete_res(&p("ls"), b"r"),
        )
        .call("ACQUIRE unregistered", 0, acquire(&p("ls"), b"r", 0))
        .call("RELEASE unregistered", 0, release(&p("ls"), b"r"))
        .call("CREATE_LOCKSPACE unregistered", 0, create_ls(&p("ls")));
}

fn register_and_lockspaces(s: &mut Script) {
    let bad_id = LockCall::Register {
        owner: owner("zero", 0, 4_000_999),
        flags: 0,
    };
    let bad_flags = LockCall::Register {
        owner: owner("vm-1", 1, 4_000_001),
        flags: 1,
    };
    let empty_name = LockCall::Register {
        owner: owner("", 9, 4_000_009),
        flags: 0,
    };
    s.call("REGISTER id 0", 1, bad_id)
        .call("ACQUIRE after REGISTER id 0", 1, acquire(&p("ls"), b"r", 0))
        .call("REGISTER flags 1", 1, bad_flags)
        .call("REGISTER empty name", 1, empty_name)
        .call("REGISTER again", 1, reg(1))
        .call("CREATE_LOCKSPACE again", 1, create_ls(&p("ls")))
        .call("CREATE_LOCKSPACE default", 1, create_ls(b""))
        .step("file afile", 1, Act::File("afile"))
        .call("CREATE_LOCKSPACE on a file", 1, create_ls(&p("afile")))
        .call("CREATE_LOCKSPACE nested", 1, create_ls(&p("deep/er/ls")))
        .call("CREATE_LOCKSPACE trailing slash", 1, create_ls(&p("ls/")))
        .call(
            "ACQUIRE via trailing slash",
            1,
            acquire(&p("ls/"), b"slash", 2),
        )
        .call(
            "RELEASE via trailing slash",
            1,
            release(&p("ls/"), b"slash"),
        )
        .call("NEW default", 1, new_ls(b"", 0))
        .call("NEW fresh", 1, new_ls(&p("new1"), 0))
        .call("NEW again", 1, new_ls(&p("new1"), 0))
        .call("NEW existing lockspace", 1, new_ls(&p("ls"), 0))
        .call("NEW flags 1", 1, new_ls(&p("new2"), 1))
        .call("CREATE_LOCKSPACE made by NEW", 1, create_ls(&p("new1")))
        .call("ACQUIRE in NEW lockspace", 1, acquire(&p("new1"), b"r", 2))
        .call("RELEASE in NEW lockspace", 1, release(&p("new1"), b"r"));
    for (label, call) in [
        ("ACQUIRE unknown lockspace", acquire(&p("nope"), b"r", 0)),
        ("RELEASE unknown lockspace", release(&p("nope"), b"r")),
        (
            "CREATE_RESOURCE unknown lockspace",
            create_res(&p("nope"), b"r"),
        ),
        (
            "DELETE_RESOURCE unknown lockspace",
            delete_res(&p("nope"), b"r"),
        ),
    ] {
        s.call(label, 1, call);
    }
}

fn acquire_release(s: &mut Script) {
    let ls = p("ls");
    s.call("ACQUIRE missing", 1, acquire(&ls, b"missing", 0))
        .call("CREATE_RESOURCE r1", 1, create_res(&ls, b"r1"))
        .call("ACQUIRE r1", 1, acquire(&ls, b"r1", 0))
        .call("ACQUIRE r1 again", 1, acquire(&ls, b"r1", 0))
        .call("ACQUIRE r1 shared", 1, acquire(&ls, b"r1", ACQUIRE_SHARED))
        .call("CREATE_RESOURCE r1 locked", 1, create_res(&ls, b"r1"))
        .call("DELETE_RESOURCE r1 locked", 1, delete_res(&ls, b"r1"))
        .call("RELEASE r1", 1, release(&ls, b"r1"))
        .call("RELEASE r1 again", 1, release(&ls, b"r1"))
        .call("CREATE_RESOURCE r1 existing", 1, create_res(&ls, b"r1"))
        .call("DELETE_RESOURCE r1", 1, delete_res(&ls, b"r1"))
        .call("DELETE_RESOURCE missing", 1, delete_res(&ls, b"r1"))
        .call(
            "ACQUIRE r2 AUTOCREATE",
            1,
            acquire(&ls, b"r2", ACQUIRE_AUTOCREATE),
        )
        .call("RELEASE r2", 1, release(&ls, b"r2"))
        .step("file pre", 1, Act::File("ls/pre"))
        .call("ACQUIRE pre AUTOCREATE", 1, acquire(&ls, b"pre", 2))
        .call("RELEASE pre (unlinks)", 1, release(&ls, b"pre"))
        .call("ACQUIRE r3 shared", 1, acquire(&ls, b"r3", 3))
        .call("ACQUIRE r3 shared again", 1, acquire(&ls, b"r3", 3))
        .call("RELEASE r3 1st", 1, release(&ls, b"r3"))
        .call("RELEASE r3 2nd", 1, release(&ls, b"r3"))
        .call("RELEASE r3 3rd", 1, release(&ls, b"r3"));
    let flags = |f| LockCall::Release {
        path: ls.clone().into(),
        name: b"x".to_vec().into(),
        flags: f,
    };
    s.call("ACQUIRE flags 4", 1, acquire(&ls, b"x", 4))
        .call("ACQUIRE flags all", 1, acquire(&ls, b"x", u32::MAX))
        .call("RELEASE flags 1", 1, flags(1))
        .call("RELEASE flags SHARED", 1, flags(ACQUIRE_SHARED));
    let (path, name) = (ls.clone().into(), b"x".to_vec().into());
    s.call(
        "CREATE_RESOURCE flags 1",
        1,
        LockCall::CreateResource {
            path,
            name,
            flags: 1,
        },
    )
    .call(
        "DELETE_RESOURCE flags 1",
        1,
        LockCall::DeleteResource {
            path: ls.into(),
            name: b"x".to_vec().into(),
            flags: 1,
        },
    )
    .call("RESTRICT flags 1", 1, LockCall::Restrict { flags: 1 });
}

fn contention_and_sharing(s: &mut Script) {
    let ls = p("ls");
    s.call("REGISTER 2", 2, reg(2))
        .call("REGISTER 3", 3, reg(3))
        .call("A ACQUIRE x", 1, acquire(&ls, b"x", 2))
        .call("B ACQUIRE x", 2, acquire(&ls, b"x", 0))
        .call("B ACQUIRE x shared", 2, acquire(&ls, b"x", 1))
        .call("B RELEASE x not owner", 2, release(&ls, b"x"))
        .call("B DELETE_RESOURCE x", 2, delete_res(&ls, b"x"))
        .call("A RELEASE x", 1, release(&ls, b"x"))
        .call("A ACQUIRE s shared", 1, acquire(&ls, b"s", 3))
        .call("B ACQUIRE s shared", 2, acquire(&ls, b"s", 3))
        .call("B ACQUIRE s shared no AUTOCREATE", 2, acquire(&ls, b"s", 1))
        .call("C ACQUIRE s exclusive", 3, acquire(&ls, b"s", 0))
        .call("A RELEASE s", 1, release(&ls, b"s"))
        .call("B RELEASE s 1st", 2, release(&ls, b"s"))
        .call("C ACQUIRE s while B shares", 3, acquire(&ls, b"s", 0))
        .call("B RELEASE s 2nd", 2, release(&ls, b"s"))
        .call("C ACQUIRE t missing shared", 3, acquire(&ls, b"t", 1))
        .call("REGISTER 4 as owner 1", 4, reg(1))
        .call("A ACQUIRE o", 1, acquire(&ls, b"o", 2))
        .call("same owner other conn ACQUIRE o", 4, acquire(&ls, b"o", 2))
        .call("same owner other conn RELEASE o", 4, release(&ls, b"o"))
        .call("A RELEASE o after", 1, release(&ls, b"o"));
}

fn default_lockspace(s: &mut Script) {
    let abs = p("default-res");
    s.call("ACQUIRE default AUTOCREATE", 1, acquire(b"", &abs, 2))
        .call("ACQUIRE default again", 2, acquire(b"", &abs, 0))
        .call("RELEASE default", 1, release(b"", &abs))
        .call("CREATE_RESOURCE default", 1, create_res(b"", &abs))
        .call("DELETE_RESOURCE default", 1, delete_res(b"", &abs))
        .call("REGISTER id 0 on a fresh connection", 5, reg(0));
    let pid0 = LockCall::Register {
        owner: owner("pid0", 7, 0),
        flags: 0,
    };
    s.call("REGISTER pid 0", 5, pid0)
        .call("ACQUIRE as pid 0", 5, acquire(&p("ls"), b"p0", 2))
        .call("RELEASE as pid 0", 5, release(&p("ls"), b"p0"));
}

fn names(s: &mut Script) {
    let ls = p("ls");
    s.call("ACQUIRE 255-byte name", 1, acquire(&ls, &[b'n'; 255], 2))
        .call("RELEASE 255-byte name", 1, release(&ls, &[b'n'; 255]))
        .call("ACQUIRE 256-byte name", 1, acquire(&ls, &[b'n'; 256], 2))
        .call(
            "ACQUIRE 65536-byte name",
            1,
            acquire(&ls, &[b'n'; 65536], 2),
        )
        .call("CREATE_LOCKSPACE 65537 bytes", 1, create_ls(&[b'a'; 65537]))
        .call("ACQUIRE non-UTF-8 name", 1, acquire(&ls, b"\xff\xfe", 2))
        .call("RELEASE non-UTF-8 name", 1, release(&ls, b"\xff\xfe"));
}

fn restrict_and_disconnect(s: &mut Script) {
    let ls = p("ls");
    s.call("REGISTER 6", 6, reg(6))
        .call("ACQUIRE rr", 6, acquire(&ls, b"rr", 2))
        .call("RESTRICT", 6, LockCall::Restrict { flags: 0 })
        .call("RESTRICT again", 6, LockCall::Restrict { flags: 0 })
        .call("REGISTER restricted", 6, reg(6))
        .call("NEW restricted", 6, new_ls(&p("n6"), 0))
        .call("CREATE_LOCKSPACE restricted", 6, create_ls(&ls))
        .call("CREATE_RESOURCE restricted", 6, create_res(&ls, b"q"))
        .call("DELETE_RESOURCE restricted", 6, delete_res(&ls, b"q"))
        .call("ACQUIRE restricted", 6, acquire(&ls, b"q", 2))
        .call("RELEASE restricted", 6, release(&ls, b"rr"))
        .call("ACQUIRE flags 4 restricted", 6, acquire(&ls, b"q", 4))
        .step("close restricted owner", 6, Act::Close)
        .call("rr held after close", 2, acquire(&ls, b"rr", 0))
        .call("REGISTER as owner 6", 7, reg(6))
        .call("RELEASE rr as owner 6", 7, release(&ls, b"rr"))
        .call("ACQUIRE f", 7, acquire(&ls, b"f", 2))
        .step("close f's connection", 7, Act::Close)
        .call("f held after close", 2, acquire(&ls, b"f", 0))
        .call("REGISTER owner 6 again", 8, reg(6))
        .call("RELEASE f as owner 6", 8, release(&ls, b"f"));
}

fn framing(s: &mut Script) {
    let register = payload(&reg(9));
    let create = payload(&create_ls(&p("ls")));
    let (call, reply, fds) = (msg_type::CALL, msg_type::REPLY, msg_type::CALL_WITH_FDS);
    let ok = status::OK;
    let mut with_nfds = 0u32.to_be_bytes().to_vec();
    with_nfds.extend_from_slice(&register);
    let mut trailing = register.clone();
    trailing.extend_from_slice(&[0; 8]);
    let mut nul = create.clone();
    let at = 4 + BASE.len() + 1;
    nul[at] = 0; // "/run/diff/\0s": the daemon sees "/run/diff/"
    let mut padding = payload(&create_ls(&p("ls-x")));
    let last = padding.len() - 1;
    padding[last] = 0xff;
    let huge = [0x00, 0x01, 0x00, 0x01]; // string length 65537, no data
    s.raw("REGISTER serial 0xffffffff", 10, {
        let mut f = lock_frame(1, call, ok, &register);
        f[20..24].copy_from_slice(&[0xff; 4]);
        f
    })
    .raw(
        "wrong program",
        10,
        frame(0x2000_8086, 1, 1, call, ok, &register),
    )
    .raw(
        "wrong version",
        10,
        frame(lock::PROGRAM, 2, 1, call, ok, &register),
    );
    for proc_ in [0, 9, -1] {
        s.raw(
            &format!("procedure {proc_}"),
            10,
            lock_frame(proc_, call, ok, &[]),
        );
    }
    for kind in [reply, msg_type::MESSAGE, msg_type::STREAM, 99] {
        s.raw(
            &format!("type {kind}"),
            10,
            lock_frame(1, kind, ok, &register),
        );
    }
    s.raw(
        "CALL_WITH_FDS nfds 0",
        10,
        lock_frame(1, fds, ok, &with_nfds),
    )
    .raw(
        "status ERROR in CALL",
        10,
        lock_frame(1, call, 1, &register),
    )
    .raw(
        "status CONTINUE in CALL",
        10,
        lock_frame(1, call, 2, &register),
    )
    .raw("status -1 in CALL", 10, lock_frame(1, call, -1, &register))
    .raw(
        "truncated payload",
        10,
        lock_frame(1, call, ok, &register[..10]),
    )
    .raw("empty payload", 10, lock_frame(1, call, ok, &[]))
    .raw("trailing bytes", 10, lock_frame(1, call, ok, &trailing))
    .raw("string too long", 10, lock_frame(8, call, ok, &huge))
    .raw("string length max", 10, lock_frame(8, call, ok, &[0xff; 4]))
    .raw("embedded NUL", 10, lock_frame(8, call, ok, &nul))
    .raw("non-zero padding", 10, lock_frame(8, call, ok, &padding))
    .raw("keepalive PING", 10, frame(0x6b65_6570, 1, 1, 2, ok, &[]));
    let mut pipelined = lock_frame(8, call, ok, &create);
    pipelined.extend(lock_frame(
        6,
        call,
        ok,
        &payload(&acquire(&p("ls"), b"z", 2)),
    ));
    pipelined.extend(lock_frame(1, call, ok, &register));
    s.raw("3 pipelined calls", 11, pipelined);
    // A length word below the header size, followed by that many bytes in all.
    for (label, len) in [("length 0", 0u32), ("length 4", 4), ("length 27", 27)] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.resize((len as usize).max(4), 0);
        s.raw(label, 12 + len as usize, bytes);
    }
    s.raw("header only", 13, lock_frame(1, call, ok, &[]));
}

/// Where the two daemons answer differently on purpose (see [`ALLOWED`]).
fn deliberate_fixes(s: &mut Script) {
    let ls = p("ls");
    s.call("fix3 ACQUIRE empty name", 1, acquire(&ls, b"", 2))
        .call(
            "fix3 ACQUIRE empty name no AUTOCREATE",
            1,
            acquire(&ls, b"", 0),
        )
        .call("fix3 ACQUIRE .", 1, acquire(&ls, b".", 2))
        .call("fix3 ACQUIRE ../escape", 1, acquire(&ls, b"../escape", 2))
        .call("fix3 RELEASE ../escape", 1, release(&ls, b"../escape"))
        .call("fix3 ACQUIRE sub/x", 1, acquire(&ls, b"sub/x", 2))
        .call(
            "fix3 CREATE_RESOURCE ../made",
            1,
            create_res(&ls, b"../made"),
        )
        .call(
            "fix3 DELETE_RESOURCE ../made",
            1,
            delete_res(&ls, b"../made"),
        );
    let r6 = p("ls/r6");
    s.call("ACQUIRE r6 by full path", 1, acquire(b"", &r6, 2))
        .call("fix6 CREATE_RESOURCE r6 by name", 2, create_res(&ls, b"r6"))
        .call("RELEASE r6 by full path", 1, release(b"", &r6));
    s.call("ACQUIRE non-UTF-8 again", 1, acquire(&ls, b"\xff\xfe", 2))
        .call(
            "fix9 busy text with non-UTF-8",
            2,
            acquire(&ls, b"\xff\xfe", 2),
        )
        .call("RELEASE non-UTF-8 again", 1, release(&ls, b"\xff\xfe"));
    let r11 = p("ls/r11");
    s.call("ACQUIRE r11 by full path", 1, acquire(b"", &r11, 2))
        .call("fix11 ACQUIRE r11 by name", 2, acquire(&ls, b"r11", 2))
        .call("fix11 RELEASE r11 by name", 2, release(&ls, b"r11"))
        .call("RELEASE r11 by full path", 1, release(b"", &r11));
    // libvirt stores a broken lockspace here; nothing below touches it.
    s.step("file nf", 1, Act::File("nf"))
        .call("fix1 NEW on a file", 1, new_ls(&p("nf"), 0))
        .call("ACQUIRE in NEW-on-file", 1, acquire(&p("nf"), b"r", 2))
        .call("fix1 NEW under a file", 1, new_ls(&p("nf/sub"), 0))
        .call(
            "fix1 NEW with a 256-byte component",
            1,
            new_ls(&p(&"n".repeat(256)), 0),
        )
        .step("directory for the end", 1, Act::Dir("end"));
}
