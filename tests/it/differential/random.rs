//! Seeded random call sequences for the randomized differential test
//! (`randomized.rs`), drawn step by step against the model of the daemon's
//! state (`random/model.rs`), which predicts each step.
//!
//! A sequence mixes valid and malformed frames on six connections: four opened
//! by the test (registered with made-up owner pids, so closing them releases
//! nothing), and two opened by owner processes the test starts (`sleep`, which
//! connects in its own name), so that registering their own pid and closing
//! makes a real owner disconnect: release of every lease of that pid and
//! fencing (SIGTERM) when it held any. Calls cover every procedure and flag
//! check, several lockspaces (nested, aliased by a trailing slash, on a plain
//! file, with a 256-byte component, non-UTF-8), shared and exclusive leases,
//! AUTOCREATE, the default lockspace (including paths that alias a directory
//! lockspace's files), RESTRICT, pipelines, calls split across writes, trailing
//! bytes, CALL_WITH_FDS with no fd and with one, keepalive and frames the
//! daemon rejects, ignores, waits for the rest of, or closes the connection for.
//!
//! The model keeps what both daemons must agree on (lockspaces, the lease
//! table with every ownership entry, which files and directories exist, each
//! connection's registration and restriction, the owner processes) and
//! predicts for every step the status (and error code and domain) of each
//! reply, whether the daemon closes the connection, which owners are fenced,
//! and whether the step exercises one of README's deliberate fixes, and which
//! exact difference that fix must make. A step the model cannot predict exactly
//! is never generated: NEW again on a key where libvirt stored a NULL
//! lockspace once the directory could be created, names that escape a
//! lockspace where libvirt's call would succeed, DELETE_RESOURCE of a leased
//! file through another name (its lock would stay on an unlinked inode, named
//! by inode number), a non-owner RELEASE by an owner process (the error quotes
//! its pid, which differs between the two runs), and any owner disconnect after
//! a NULL lockspace exists (libvirt segfaults). Steps after which the two
//! daemons' states stay different (fixes 2, 6 and 11) end the sequence; a
//! connection that only one daemon closed (fixes 10 and 16, on connections of
//! the test, whose close releases nothing) is closed by the client next.
//!
//! Long run (documented in README's testing section):
//!
//! ```sh
//! DIFF_SEEDS=500 DIFF_STEPS=300 nice -n 10 cargo test --test it random_differential -- --nocapture
//! ```
//!
//! `DIFF_SEEDS=N` runs seeds 1..=N (`DIFF_SEEDS=A..B` seeds A..=B),
//! `DIFF_SEED=S` only seed S (to replay a
//! failure), `DIFF_STEPS` sets the steps per seed, `DIFF_TRACE=1` prints each
//! sequence before it runs. Without them a fixed set of seeds runs (a few
//! seconds).

use bytes::BytesMut;
use virtlockd::protocol::lock;
use virtlockd::protocol::{msg_type, status, KEEPALIVE_PROGRAM};

use super::scenario::BASE;

mod model;

pub use model::{Act, Effect, Expect, Expected, Fix, Mangle, Op, OwnerRef, Piece, Step};
use model::{Model, CONNS, RPC, TEST_CONNS};

/// One in this many candidate steps that end the sequence is taken.
const TERMINAL_ODDS: u32 = 25;

/// splitmix64: a few lines, deterministic on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: u32) -> bool {
        self.below(one_in as usize) == 0
    }

    fn weighted<T: Clone>(&mut self, items: &[(u32, T)]) -> T {
        let total: u32 = items.iter().map(|(w, _)| w).sum();
        let mut at = self.below(total as usize) as u32;
        for (w, item) in items {
            if at < *w {
                return item.clone();
            }
            at -= w;
        }
        unreachable!("weights add up")
    }
}

/// A frame with this header (length word computed) and payload.
fn frame(
    prog: u32,
    vers: u32,
    proc_: i32,
    kind: i32,
    st: i32,
    serial: u32,
    payload: &[u8],
) -> Vec<u8> {
    crate::support::wire::packet(prog, vers, proc_, kind, serial, st, payload)
}

/// The keepalive PING the runner also uses to mark the end of a step's replies.
pub fn ping() -> Vec<u8> {
    frame(
        KEEPALIVE_PROGRAM,
        1,
        1,
        msg_type::MESSAGE,
        status::OK,
        0,
        &[],
    )
}

fn register_payload() -> Vec<u8> {
    let mut b = BytesMut::new();
    Op::Register {
        owner: OwnerRef::Fake(9),
        flags: 0,
    }
    .to_call(&|_| 0)
    .encode(&mut b);
    b.to_vec()
}

/// A malformed or unusual frame, with what it must do.
fn malformed(rng: &mut Rng, serial: u32) -> (Piece, Effect) {
    let (lp, lv, call, ok) = (lock::PROGRAM, lock::VERSION, msg_type::CALL, status::OK);
    let reg = register_payload();
    let rpc_error = Effect::Reply(Expected::Err(39, RPC));
    let (what, bytes, effect) = match rng.below(12) {
        0 => {
            let p = *[0, 9, -1, 100].get(rng.below(4)).unwrap_or(&0);
            (
                format!("procedure {p}"),
                frame(lp, lv, p, call, ok, serial, &[]),
                rpc_error,
            )
        }
        1 => (
            "wrong program".to_owned(),
            frame(0x2000_8086, 1, 1, call, ok, serial, &reg),
            rpc_error,
        ),
        2 => (
            "wrong version".to_owned(),
            frame(lp, 2, 1, call, ok, serial, &reg),
            rpc_error,
        ),
        3 => {
            let t = *[msg_type::REPLY, msg_type::MESSAGE, msg_type::STREAM, 99]
                .get(rng.below(4))
                .unwrap_or(&99);
            (
                format!("REGISTER as type {t}"),
                frame(lp, lv, 1, t, ok, serial, &reg),
                Effect::Nothing,
            )
        }
        4 => {
            let s = *[1, 2, -1].get(rng.below(3)).unwrap_or(&1);
            (
                format!("REGISTER with status {s}"),
                frame(lp, lv, 1, call, s, serial, &reg),
                rpc_error,
            )
        }
        5 => {
            let p = 1 + rng.below(8) as i32;
            (
                format!("procedure {p} without arguments"),
                frame(lp, lv, p, call, ok, serial, &[]),
                rpc_error,
            )
        }
        6 => (
            "REGISTER truncated to 10 bytes".to_owned(),
            frame(lp, lv, 1, call, ok, serial, &reg[..10]),
            rpc_error,
        ),
        7 => (
            "CREATE_LOCKSPACE string of 65537 bytes announced".to_owned(),
            frame(lp, lv, 8, call, ok, serial, &[0, 1, 0, 1]),
            rpc_error,
        ),
        8 => (
            "keepalive PING".to_owned(),
            ping(),
            Effect::Reply(Expected::Pong),
        ),
        9 => (
            "keepalive PONG".to_owned(),
            frame(KEEPALIVE_PROGRAM, 1, 2, msg_type::MESSAGE, ok, 0, &[]),
            Effect::Nothing,
        ),
        10 => {
            let len = *[8u32, 12, 27].get(rng.below(3)).unwrap_or(&8);
            (
                format!("length word {len} alone"),
                len.to_be_bytes().to_vec(),
                Effect::WaitsForMore,
            )
        }
        _ => {
            // Below the header size, with the bytes announced; or above
            // the 32 MiB limit, alone.
            let len = *[0u32, 4, 12, 27, 33_554_437, u32::MAX]
                .get(rng.below(6))
                .unwrap_or(&0);
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.resize((len as usize).clamp(4, 28), 0);
            (format!("length word {len}"), bytes, Effect::Close)
        }
    };
    (Piece::Bytes { what, bytes }, effect)
}

fn base(rel: &str) -> Vec<u8> {
    format!("{BASE}/{rel}").into_bytes()
}

fn long_name() -> Vec<u8> {
    vec![b'n'; 256]
}

fn pick_key(rng: &mut Rng) -> Vec<u8> {
    let mut non_utf8 = base("");
    non_utf8.push(0xff);
    let mut long = base("");
    long.extend(long_name());
    rng.weighted(&[
        (30, base("a")),
        (20, base("b")),
        (15, Vec::new()),
        (4, base("a/")),
        (2, base("/a")),
        (2, base("./b")),
        (4, base("a/n")),
        (3, base("f")),
        (1, base("f/x")),
        (1, long),
        (3, non_utf8),
    ])
}

fn pick_name(rng: &mut Rng, key: &[u8]) -> Vec<u8> {
    if key.is_empty() {
        let mut non_utf8 = base("");
        non_utf8.extend_from_slice(b"\xff/r1");
        return rng.weighted(&[
            (20, base("d1")),
            (10, base("d2")),
            (4, base("a/r1")),
            (3, base("f")),
            (1, base("a")),
            (2, non_utf8),
            (1, base("zz/x")),
        ]);
    }
    rng.weighted(&[
        (30, b"r1".to_vec()),
        (20, b"r2".to_vec()),
        (10, b"r3".to_vec()),
        (3, b"n".to_vec()),
        (4, b"\xff\xfe".to_vec()),
        (1, long_name()),
        (1, Vec::new()),
        (1, b".".to_vec()),
        (1, b"..".to_vec()),
        (1, b"sub/x".to_vec()),
        (1, b"../zz/x".to_vec()),
    ])
}

fn pick_flags(rng: &mut Rng, rare: u32) -> u32 {
    if rng.chance(25) {
        rare
    } else {
        0
    }
}

fn pick_owner(rng: &mut Rng, m: &Model, conn: usize) -> OwnerRef {
    let own = m.conns[conn].as_ref().and_then(|c| c.child);
    let any_child = (!m.children.is_empty()).then(|| OwnerRef::Child(rng.below(m.children.len())));
    let mut choices = vec![
        (10, OwnerRef::Fake(1)),
        (10, OwnerRef::Fake(2)),
        (6, OwnerRef::Fake(3)),
        (2, OwnerRef::Fake(7)),
        (1, OwnerRef::Fake(8)),
        (1, OwnerRef::Fake(0)),
    ];
    if let Some(k) = own {
        choices.push((40, OwnerRef::Child(k)));
    }
    if let Some(c) = any_child {
        choices.push((3, c));
    }
    rng.weighted(&choices)
}

/// A shared lease the owner registered on `conn` holds, if any: taking it
/// again gives the owner two entries (fix 2 at its disconnect).
fn held_shared(rng: &mut Rng, m: &Model, conn: usize) -> Option<Op> {
    let owner = m.conns[conn].as_ref()?.owner?;
    let held: Vec<(&Vec<u8>, &Vec<u8>)> = m
        .spaces
        .iter()
        .flat_map(|(k, s)| s.resources.iter().map(move |(n, r)| (k, n, r)))
        .filter(|(_, _, r)| r.shared && r.owners.contains(&owner))
        .map(|(k, n, _)| (k, n))
        .collect();
    let (key, name) = held.get(rng.below(held.len().max(1)))?;
    Some(Op::Acquire {
        path: key.to_vec(),
        name: name.to_vec(),
        flags: lock::ACQUIRE_SHARED,
    })
}

fn pick_op(rng: &mut Rng, m: &Model, conn: usize) -> Op {
    let registered = m.conns[conn].as_ref().is_some_and(|c| c.owner.is_some());
    if conn >= TEST_CONNS && rng.chance(4) {
        if let Some(op) = held_shared(rng, m, conn) {
            return op;
        }
    }
    if !registered && rng.chance(2) {
        return Op::Register {
            owner: pick_owner(rng, m, conn),
            flags: pick_flags(rng, 1),
        };
    }
    let key = pick_key(rng);
    let name = pick_name(rng, &key);
    if m.space(&key).is_none() && rng.chance(3) {
        // Most calls need a lockspace: create the missing one more often.
        return Op::CreateLockspace { path: key };
    }
    match rng.weighted(&[
        (5, 0),
        (1, 1),
        (3, 2),
        (5, 3),
        (5, 4),
        (5, 5),
        (30, 6),
        (20, 7),
    ]) {
        0 => Op::Register {
            owner: pick_owner(rng, m, conn),
            flags: pick_flags(rng, 1),
        },
        1 => Op::Restrict {
            flags: pick_flags(rng, 1),
        },
        2 => Op::New {
            path: key,
            flags: pick_flags(rng, 1),
        },
        3 => Op::CreateLockspace { path: key },
        4 => Op::CreateResource {
            path: key,
            name,
            flags: pick_flags(rng, 1),
        },
        5 => Op::DeleteResource {
            path: key,
            name,
            flags: pick_flags(rng, 1),
        },
        6 => Op::Acquire {
            path: key,
            name,
            flags: if rng.chance(30) {
                *[4u32, u32::MAX].get(rng.below(2)).unwrap_or(&4)
            } else {
                rng.below(4) as u32
            },
        },
        _ => Op::Release {
            path: key,
            name,
            flags: pick_flags(rng, lock::ACQUIRE_SHARED),
        },
    }
}

/// A candidate step and the effects of its malformed frames.
fn propose(rng: &mut Rng, m: &mut Model) -> (Act, Vec<Effect>) {
    let conn = if rng.chance(3) {
        TEST_CONNS + rng.below(CONNS - TEST_CONNS)
    } else {
        rng.below(TEST_CONNS)
    };
    if let Some(conn) = m.doomed {
        return (Act::Close { conn }, Vec::new());
    }
    if m.conns[conn].is_none() {
        let child = (conn >= TEST_CONNS).then_some(m.children.len());
        return (Act::Connect { conn, child }, Vec::new());
    }
    // Owner processes' connections close more often: each close is an owner
    // disconnect.
    let close = if conn >= TEST_CONNS { 8 } else { 4 };
    match rng.weighted(&[(70, 0), (close, 1), (2, 2), (7, 3), (5, 4), (1, 5)]) {
        0 => {
            let op = pick_op(rng, m, conn);
            let mangle = match (&op, rng.below(20)) {
                (Op::CreateLockspace { .. }, 0 | 1) => Mangle::NulInPath,
                (_, 2) => Mangle::Trailing,
                (_, 3) => Mangle::WithNoFds,
                _ => Mangle::None,
            };
            let serial = m.next_serial(conn);
            let split = rng.chance(20);
            let piece = Piece::Call { op, serial, mangle };
            (
                Act::Send {
                    conn,
                    pieces: vec![piece],
                    split,
                },
                vec![Effect::Nothing],
            )
        }
        1 => (Act::Close { conn }, Vec::new()),
        5 => {
            let op = Op::Register {
                owner: OwnerRef::Fake(1 + rng.below(3) as u32),
                flags: 0,
            };
            let serial = m.next_serial(conn);
            let piece = Piece::Call {
                op,
                serial,
                mangle: Mangle::WithOneFd,
            };
            (
                Act::Send {
                    conn,
                    pieces: vec![piece],
                    split: false,
                },
                vec![Effect::Nothing],
            )
        }
        2 => {
            let rel = rng.weighted(&[(3, "f"), (2, "a/r1"), (2, "a/r2"), (1, "b/r1"), (2, "d1")]);
            (Act::File(rel.to_owned()), Vec::new())
        }
        3 => {
            let serial = m.next_serial(conn);
            let (piece, effect) = malformed(rng, serial);
            (
                Act::Send {
                    conn,
                    pieces: vec![piece],
                    split: false,
                },
                vec![effect],
            )
        }
        _ => {
            // Calls, and now and then a frame that is answered or ignored
            // without closing the connection.
            let n = 2 + rng.below(2);
            let mut pieces = Vec::new();
            let mut effects = Vec::new();
            while pieces.len() < n {
                let serial = m.next_serial(conn);
                if rng.chance(4) {
                    let (piece, effect) = malformed(rng, serial);
                    if matches!(effect, Effect::Reply(_) | Effect::Nothing) {
                        pieces.push(piece);
                        effects.push(effect);
                    }
                    continue;
                }
                let op = pick_op(rng, m, conn);
                pieces.push(Piece::Call {
                    op,
                    serial,
                    mangle: Mangle::None,
                });
                effects.push(Effect::Nothing);
            }
            (
                Act::Send {
                    conn,
                    pieces,
                    split: false,
                },
                effects,
            )
        }
    }
}

/// The sequence of a seed: up to `steps` steps, fewer if one ends it.
pub fn generate(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut model = Model::new();
    let mut out: Vec<Step> = Vec::with_capacity(steps);
    while out.len() < steps {
        let step = loop {
            let mut trial = model.clone();
            let (act, effects) = propose(&mut rng, &mut trial);
            match trial.apply(act, &effects) {
                // Fix 2 needs a rare state: always taken.
                Ok(step)
                    if !step.expect.terminal
                        || matches!(step.expect.fix, Some(Fix::LeakedEntries { .. }))
                        || rng.chance(TERMINAL_ODDS) =>
                {
                    model = trial;
                    break step;
                }
                _ => {}
            }
        };
        let last = step.expect.terminal;
        out.push(step);
        if last {
            break;
        }
    }
    out
}
