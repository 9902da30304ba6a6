//! Unit tests of libvirt's restart JSON: every layout libvirt reads, its number and
//! UUID rules, the error texts, and the exact text written.

/// The writer emits compact JSON; expectations are written pretty.
fn compact(pretty: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in pretty.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}
use super::super::{
    ClientState, FenceState, ListenerState, LockspaceState, OwnerState, ResourceState, ServerState,
    SessionState, ADMIN_SERVER, FORMAT, LOCK_SERVER, VERSION,
};
use super::*;
use serde_json::{json, Value};

const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Spec Appendix B, verbatim except for the `<64 hex chars>` placeholders.
const APPENDIX_B: &str = include_str!("../../../tests/fixtures/libvirt-state/appendix-b.json");

fn appendix_b() -> String {
    APPENDIX_B.replace("<64 hex chars>", HEX)
}

/// Trimmed from observed-behaviour.md §7 (libvirt 9.0's own output), keeping
/// its formatting: empty arrays as `[\n\n        ]`, both servers, a
/// restricted client, a shared resource and a repeated directory.
const OBSERVED: &str =
    include_str!("../../../tests/fixtures/libvirt-state/observed-libvirt-9.0.json");

// --- builders for the §11.2-style cases -------------------------------

fn sock(fd: i32, is_client: bool) -> Value {
    json!({"fd": fd, "errfd": -1, "pid": 0, "isClient": is_client, "unlinkUNIX": !is_client})
}

fn lock_private(id: u32) -> Value {
    json!({
        "restricted": false, "ownerPid": 100 + id, "ownerId": id,
        "ownerName": format!("vm{id}"),
        "ownerUUID": "00000000-0000-0000-0000-00000000000a"
    })
}

/// A lock client; `id` None leaves the key out.
fn client(id: Option<u64>, fd: i32) -> Value {
    let mut c = json!({
        "auth": 0, "auth_pending": false, "readonly": false, "nrequests_max": 1,
        "sock": sock(fd, true), "privateData": lock_private(1)
    });
    if let (Some(id), Some(obj)) = (id, c.as_object_mut()) {
        obj.insert("id".into(), json!(id));
    }
    c
}

fn server(clients: Vec<Value>) -> Value {
    json!({
        "min_workers": 0, "max_workers": 0, "priority_workers": 0,
        "max_clients": 10, "max_anonymous_clients": 10,
        "keepaliveInterval": 4294967295u32, "keepaliveCount": 0,
        "next_client_id": 7,
        "services": [{"auth": 0, "readonly": false, "nrequests_client_max": 1,
                      "socks": [sock(3, false)]}],
        "clients": clients
    })
}

fn doc_with(key: &str, daemon: Value) -> Value {
    let mut doc = json!({
        "defaultLockspace": {"resources": []},
        "lockspaces": [],
        "magic": "42"
    });
    if let Some(obj) = doc.as_object_mut() {
        obj.insert(key.into(), daemon);
    }
    doc
}

fn doc(daemon: Value) -> Value {
    doc_with("daemon", daemon)
}

fn parse(v: &Value) -> Result<Snapshot, StateError> {
    from_json(&v.to_string())
}

/// The owner registered on the first client of the first server of `v`.
fn first_owner(v: &Value) -> OwnerState {
    let s = parse(v).unwrap();
    let session = s.servers[0].clients[0].session.clone().unwrap();
    session.owner.unwrap()
}

fn err(v: &Value) -> String {
    match parse(v) {
        Ok(s) => panic!("accepted: {s:?}"),
        Err(StateError::Invalid(msg)) => msg,
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

/// Sets `doc[path...] = value`, creating nothing (the path must exist).
fn set(doc: &mut Value, path: &[&str], value: Value) {
    let mut cur = doc;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*p],
        };
    }
    *cur = value;
}

fn remove(doc: &mut Value, path: &[&str], key: &str) {
    let mut cur = doc;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*p],
        };
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.remove(key);
    }
}

// --- reading -------------------------------------------------------------

// --- expected snapshots ----------------------------------------------------

/// A snapshot with what libvirt's JSON carries; the rest at its JSON value.
fn snapshot(magic: u32, servers: Vec<ServerState>, lockspaces: Vec<LockspaceState>) -> Snapshot {
    Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        magic,
        servers,
        lockspaces,
        upgrades: 0,
        started_at: 0,
        fencing: vec![],
        token: 0,
        timeout: None,
        crash: None,
        stale_fds: Vec::new(),
    }
}

/// A server; `listeners` are (fd, unlink) pairs.
fn server_state(
    name: &str,
    max_clients: u64,
    next_client_id: u64,
    listeners: &[(i32, bool)],
    clients: Vec<ClientState>,
) -> ServerState {
    ServerState {
        name: name.into(),
        max_clients,
        next_client_id,
        listeners: listeners
            .iter()
            .map(|&(fd, unlink)| ListenerState { fd, unlink })
            .collect(),
        clients,
        max_unauth_clients: None,
        prio_workers: None,
    }
}

fn client_state(id: u64, fd: i32, conn_time: i64, session: Option<SessionState>) -> ClientState {
    ClientState {
        id,
        fd,
        conn_time,
        session,
        pending: vec![],
        peer_pid: None,
        peer_ids: None,
    }
}

fn lockspace_state(directory: Option<&[u8]>, resources: Vec<ResourceState>) -> LockspaceState {
    LockspaceState {
        directory: directory.map(<[u8]>::to_vec),
        owners: Vec::new(),
        resources,
    }
}

fn resource_state(
    name: &[u8],
    path: &[u8],
    fd: i32,
    (lock_held, flags): (bool, u32),
    owners: Vec<i32>,
) -> ResourceState {
    ResourceState {
        name: name.to_vec(),
        path: path.to_vec(),
        fd,
        lock_held,
        flags,
        owners,
        acquired_at: 0,
        lost_reason: None,
        lost_since: 0,
        file_id: None,
        ofd: false,
        tag: 0,
    }
}

#[test]
fn appendix_b_every_field() {
    let s = from_json(&appendix_b()).unwrap();
    let vm1 = SessionState {
        restricted: true,
        owner: Some(OwnerState {
            uuid: [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ],
            name: b"vm1".to_vec(),
            id: 1,
            pid: 12345,
        }),
    };
    let path = format!("/var/lib/libvirt/lockd/files/{HEX}");
    let expected = snapshot(
        4242,
        vec![
            server_state(
                LOCK_SERVER,
                1024,
                4,
                &[(3, false)],
                vec![client_state(2, 7, 1_700_000_000, Some(vm1))],
            ),
            server_state(
                ADMIN_SERVER,
                5000,
                2,
                &[(4, false)],
                vec![client_state(1, 9, 1_700_000_100, None)],
            ),
        ],
        vec![
            lockspace_state(None, vec![]),
            lockspace_state(
                Some(b"/var/lib/libvirt/lockd/files"),
                vec![resource_state(
                    HEX.as_bytes(),
                    path.as_bytes(),
                    8,
                    (true, 2),
                    vec![12345],
                )],
            ),
        ],
    );
    assert_eq!(s, expected);
    assert_eq!(s.fds(), vec![3, 7, 4, 9, 8]);
}

#[test]
fn observed_libvirt_9_output() {
    let s = from_json(OBSERVED).unwrap();
    assert_eq!(s.magic, 10063);
    let names: Vec<&str> = s.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [LOCK_SERVER, ADMIN_SERVER]);

    let lock = &s.servers[0];
    assert_eq!((lock.max_clients, lock.next_client_id), (4096, 63));
    assert_eq!(
        lock.listeners,
        [ListenerState {
            fd: 5,
            unlink: true
        }]
    );
    let ids: Vec<(u64, i32)> = lock.clients.iter().map(|c| (c.id, c.fd)).collect();
    assert_eq!(ids, [(57, 12), (60, 14)]);
    let d = lock.clients[1].session.as_ref().unwrap();
    assert!(d.restricted);
    let owner = d.owner.as_ref().unwrap();
    assert_eq!(
        (owner.id, owner.pid, &owner.name[..]),
        (4, 4_200_004, &b"vmD"[..])
    );
    assert_eq!(owner.uuid[..4], [0xdd; 4]);
    assert_eq!(owner.uuid[15], 4);
    assert!(!lock.clients[0].session.as_ref().unwrap().restricted);

    let admin = &s.servers[1];
    assert_eq!((admin.max_clients, admin.next_client_id), (5, 1));
    assert_eq!(
        admin.listeners,
        [ListenerState {
            fd: 6,
            unlink: true
        }]
    );
    assert!(admin.clients.is_empty());

    let dirs: Vec<Option<&[u8]>> = s
        .lockspaces
        .iter()
        .map(|l| l.directory.as_deref())
        .collect();
    assert_eq!(
        dirs,
        [
            None,
            Some(&b"$BASE/ls"[..]),
            Some(&b"/"[..]),
            Some(&b"$BASE/ls"[..])
        ]
    );
    assert_eq!(s.lockspaces[0].resources[0].fd, 18);
    assert_eq!(s.lockspaces[0].resources[0].owners, [4_200_004]);
    let s1 = &s.lockspaces[3].resources[0];
    assert_eq!((s1.flags, s1.fd), (3, 16));
    assert_eq!(s1.owners, [4_200_002, 4_200_003]);
    assert_eq!(s.fds(), vec![5, 12, 14, 6, 18, 16]);
}

#[test]
fn legacy_flat_daemon_without_servers_key() {
    // libvirt's "initial" case: the daemon object is the server itself, and
    // neither ids nor next_client_id nor unlinkUNIX are present.
    let mut srv = server(vec![client(None, 5), client(None, 6)]);
    for key in ["next_client_id", "max_anonymous_clients"] {
        remove(&mut srv, &[], key);
    }
    remove(&mut srv, &["services", "0", "socks", "0"], "unlinkUNIX");
    remove(&mut srv, &["clients", "0", "sock"], "unlinkUNIX");
    let s = parse(&doc(srv)).unwrap();
    assert_eq!(s.servers.len(), 1);
    let srv = &s.servers[0];
    assert_eq!(srv.name, LOCK_SERVER);
    assert_eq!(srv.max_clients, 10);
    assert_eq!(
        srv.listeners,
        [ListenerState {
            fd: 3,
            unlink: true
        }]
    );
    let ids: Vec<u64> = srv.clients.iter().map(|c| c.id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(srv.next_client_id, 3);
}

#[test]
fn legacy_server_key() {
    let s = parse(&doc_with("server", server(vec![client(Some(4), 5)]))).unwrap();
    assert_eq!(s.servers.len(), 1);
    assert_eq!(s.servers[0].name, LOCK_SERVER);
    assert_eq!(s.servers[0].clients[0].fd, 5);
    // "daemon" wins over "server" when both exist.
    let mut both = doc(json!({"servers": {}}));
    set(&mut both, &["server"], server(vec![]));
    assert!(parse(&both).unwrap().servers.is_empty());
    // Neither.
    let mut none = doc(json!({}));
    remove(&mut none, &[], "daemon");
    assert!(err(&none).contains("\"daemon\""));
}

#[test]
fn servers_array_form() {
    let s = parse(&doc(json!({"servers": [server(vec![client(Some(1), 5)])]}))).unwrap();
    assert_eq!(s.servers.len(), 1);
    assert_eq!(s.servers[0].name, LOCK_SERVER);
    assert!(s.servers[0].clients[0].session.is_some());

    let two = doc(json!({"servers": [server(vec![]), server(vec![])]}));
    assert_eq!(
        err(&two),
        "Server count 2 greater than default name count 1"
    );
}

#[test]
fn servers_object_form_names() {
    let mut admin = server(vec![client(Some(1), 8)]);
    set(&mut admin, &["clients", "0", "privateData"], json!({}));
    let s = parse(&doc(
        json!({"servers": {"admin": admin, "virtlockd": server(vec![])}}),
    ))
    .unwrap();
    let names: Vec<&str> = s.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [LOCK_SERVER, ADMIN_SERVER]);
    assert_eq!(s.servers[1].clients[0].session, None);

    let bad = doc(json!({"servers": {"testServer0": server(vec![])}}));
    assert_eq!(
        err(&bad),
        "Unexpected server name 'testServer0' during restart"
    );
    let bad = doc(json!({"servers": "virtlockd"}));
    assert!(err(&bad).contains("\"servers\""));
}

#[test]
fn old_keepalive_required_key_is_ignored() {
    let mut srv = server(vec![]);
    set(&mut srv, &["keepaliveRequired"], json!(true));
    set(&mut srv, &["someFutureKey"], json!({"x": [1.5]}));
    assert_eq!(
        parse(&doc(json!({"servers": {"virtlockd": srv}})))
            .unwrap()
            .servers
            .len(),
        1
    );
}

#[test]
fn client_ids_preserved_or_assigned() {
    let srv = server(vec![
        client(Some(40), 5),
        client(None, 6),
        client(Some(3), 7),
    ]);
    let s = parse(&doc(json!({"servers": {"virtlockd": srv}}))).unwrap();
    let ids: Vec<u64> = s.servers[0].clients.iter().map(|c| c.id).collect();
    // The missing id takes next_client_id (7), which then moves on.
    assert_eq!(ids, [40, 7, 3]);
    assert_eq!(s.servers[0].next_client_id, 8);

    let mut bad = server(vec![client(Some(1), 5)]);
    set(&mut bad, &["clients", "0", "id"], json!("1"));
    assert!(err(&doc(bad)).contains("\"id\""));
}

#[test]
fn next_client_id_preserved_or_defaulted() {
    let s = parse(&doc(server(vec![]))).unwrap();
    assert_eq!(s.servers[0].next_client_id, 7);
    let mut srv = server(vec![]);
    remove(&mut srv, &[], "next_client_id");
    assert_eq!(parse(&doc(srv)).unwrap().servers[0].next_client_id, 1);
    // libvirt only warns about a malformed one, and starts from 1.
    let mut srv = server(vec![]);
    set(&mut srv, &["next_client_id"], json!("many"));
    assert_eq!(parse(&doc(srv)).unwrap().servers[0].next_client_id, 1);
}

#[test]
fn conn_time_preserved_or_zero() {
    let mut srv = server(vec![client(Some(1), 5), client(Some(2), 6)]);
    set(
        &mut srv,
        &["clients", "0", "conn_time"],
        json!(1_234_567_890),
    );
    let s = parse(&doc(srv)).unwrap();
    assert_eq!(s.servers[0].clients[0].conn_time, 1_234_567_890);
    assert_eq!(s.servers[0].clients[1].conn_time, 0);
}

#[test]
fn auth_pending_rules() {
    let mut srv = server(vec![client(Some(1), 5)]);
    set(&mut srv, &["clients", "0", "auth_pending"], json!(true));
    assert_eq!(
        err(&doc(srv.clone())),
        "Invalid auth_pending and auth combination in JSON state document"
    );
    // Legitimate for libvirt with SASL/polkit, but we cannot authenticate.
    set(&mut srv, &["clients", "0", "auth"], json!(2));
    assert!(err(&doc(srv.clone())).contains("waiting for authentication"));
    remove(&mut srv, &["clients", "0"], "auth_pending");
    assert!(err(&doc(srv.clone())).contains("waiting for authentication"));
    // Already authenticated through another method: fine.
    set(&mut srv, &["clients", "0", "auth_pending"], json!(false));
    assert_eq!(
        parse(&doc(srv.clone())).unwrap().servers[0].clients.len(),
        1
    );
    // Absent with auth 0: not pending.
    set(&mut srv, &["clients", "0", "auth"], json!(0));
    remove(&mut srv, &["clients", "0"], "auth_pending");
    assert_eq!(parse(&doc(srv)).unwrap().servers[0].clients.len(), 1);
}

#[test]
fn max_anonymous_clients_limits() {
    let mut srv = server(vec![]);
    set(&mut srv, &["max_anonymous_clients"], json!(11));
    assert_eq!(
        err(&doc(srv.clone())),
        "The overall maximum number of clients must not be less than the number of \
         clients waiting for authentication"
    );
    set(&mut srv, &["max_anonymous_clients"], json!(10));
    assert!(parse(&doc(srv)).is_ok());
}

#[test]
fn magic_is_required_and_decimal() {
    let mut d = doc(server(vec![]));
    remove(&mut d, &[], "magic");
    assert_eq!(err(&d), "missing \"magic\"");
    for bad in [
        json!(42),
        json!(""),
        json!("0x2a"),
        json!("042"),
        json!("-1"),
        json!(" 42"),
        json!("4294967296"),
    ] {
        set(&mut d, &["magic"], bad.clone());
        assert!(err(&d).contains("\"magic\""), "{bad}");
    }
    set(&mut d, &["magic"], json!("0"));
    assert_eq!(parse(&d).unwrap().magic, 0);
    set(&mut d, &["magic"], json!("4294967295"));
    assert_eq!(parse(&d).unwrap().magic, u32::MAX);
}

#[test]
fn lock_private_data_keys_are_required() {
    for key in [
        "restricted",
        "ownerPid",
        "ownerId",
        "ownerName",
        "ownerUUID",
    ] {
        let mut srv = server(vec![client(Some(1), 5)]);
        remove(&mut srv, &["clients", "0", "privateData"], key);
        let msg = err(&doc(srv));
        assert!(msg.starts_with(&format!("missing \"{key}\"")), "{msg}");
        assert!(msg.contains("daemon.clients[0].privateData"), "{msg}");
    }
    let mut srv = server(vec![client(Some(1), 5)]);
    remove(&mut srv, &["clients", "0"], "privateData");
    assert!(err(&doc(srv)).contains("\"privateData\""));
    // The admin server ignores whatever is there, but it must be there.
    let mut admin = server(vec![client(Some(1), 5)]);
    set(&mut admin, &["clients", "0", "privateData"], Value::Null);
    assert!(parse(&doc(json!({"servers": {"admin": admin.clone()}}))).is_ok());
    remove(&mut admin, &["clients", "0"], "privateData");
    assert!(err(&doc(json!({"servers": {"admin": admin}}))).contains("\"privateData\""));
}

#[test]
fn unregistered_owner_and_uuid_forms() {
    let mut srv = server(vec![client(Some(1), 5)]);
    set(
        &mut srv,
        &["clients", "0", "privateData", "ownerId"],
        json!(0),
    );
    let s = parse(&doc(srv.clone())).unwrap();
    assert_eq!(
        s.servers[0].clients[0].session,
        Some(SessionState::default())
    );

    set(
        &mut srv,
        &["clients", "0", "privateData", "ownerId"],
        json!(9),
    );
    let uuid_at = ["clients", "0", "privateData", "ownerUUID"];
    let want = [
        0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67,
        0x89,
    ];
    for good in [
        "abcdef01-2345-6789-abcd-ef0123456789",
        "ABCDEF01-2345-6789-ABCD-EF0123456789",
        "abcdef0123456789abcdef0123456789",
        "  abcdef01 2345-6789-abcd-ef0123456789\n",
    ] {
        set(&mut srv, &uuid_at, json!(good));
        let owner = first_owner(&doc(srv.clone()));
        assert_eq!(owner.uuid, want, "{good}");
        assert_eq!((owner.id, owner.pid, owner.name), (9, 101, b"vm1".to_vec()));
    }
    for bad in [
        "",
        "abcdef01-2345-6789-abcd-ef012345678",
        "abcdef01-2345-6789-abcd-ef01234567890",
        "abcdef01-2345-6789-abcd-ef012345678g",
        "a-bcdef01-2345-6789-abcd-ef012345678",
        "abcdef01-2345-6789-abcd-ef0123456789-",
    ] {
        set(&mut srv, &uuid_at, json!(bad));
        assert!(err(&doc(srv.clone())).contains("\"ownerUUID\""), "{bad}");
    }
}

#[test]
fn numbers_are_integers_of_the_right_range() {
    let at_max = ["max_clients"];
    let mut srv = server(vec![client(Some(1), 5)]);
    for bad in [
        json!(1.5),
        json!(10.0),
        json!(1e3),
        json!("10"),
        json!(true),
        json!(null),
        json!(4_294_967_296u64),
        json!(-4_294_967_296i64),
    ] {
        set(&mut srv, &at_max, bad.clone());
        let msg = err(&doc(srv.clone()));
        assert!(msg.contains("\"max_clients\""), "{bad}: {msg}");
    }
    // Exponent and fraction straight from text, not through json!().
    let text = doc(server(vec![])).to_string();
    for bad in ["1e1", "10.0", "1E1", "100000000000000000000"] {
        let t = text.replace("\"max_clients\":10", &format!("\"max_clients\":{bad}"));
        assert_ne!(t, text);
        assert!(
            matches!(from_json(&t), Err(StateError::Invalid(_))),
            "{bad}"
        );
    }
    // libvirt's unsigned parsers wrap a minus sign: -1 is u32::MAX.
    set(&mut srv, &at_max, json!(-1));
    set(&mut srv, &["max_anonymous_clients"], json!(-1));
    set(&mut srv, &["keepaliveInterval"], json!(-1));
    assert_eq!(
        parse(&doc(srv.clone())).unwrap().servers[0].max_clients,
        4_294_967_295
    );
    set(
        &mut srv,
        &["clients", "0", "privateData", "ownerPid"],
        json!(-2),
    );
    let owner = first_owner(&doc(srv.clone()));
    assert_eq!(owner.pid, u32::MAX - 1);
    // Signed 32-bit ones do not.
    set(
        &mut srv,
        &["clients", "0", "sock", "fd"],
        json!(2_147_483_648u64),
    );
    assert!(err(&doc(srv.clone())).contains("\"fd\" in daemon.clients[0].sock"));
    set(&mut srv, &["clients", "0", "sock", "fd"], json!(5.0));
    assert!(err(&doc(srv.clone())).contains("\"fd\""));
    // Booleans must be JSON booleans.
    set(&mut srv, &["clients", "0", "sock", "fd"], json!(5));
    set(&mut srv, &["clients", "0", "sock", "isClient"], json!(1));
    assert!(err(&doc(srv)).contains("\"isClient\""));
}

#[test]
fn lockspace_rules() {
    let res = |name: &str, owners: Value| {
        json!({"name": name, "path": format!("/d/{name}"), "fd": 9, "lockHeld": true,
               "flags": 1, "owners": owners})
    };
    let mut d = doc(server(vec![]));
    set(
        &mut d,
        &["lockspaces"],
        json!([{"directory": "/d", "resources": [
            res("a", json!([4_294_967_295u64, 18_446_744_073_709_551_615u64, -1, 7]))
        ]}]),
    );
    let s = parse(&d).unwrap();
    assert_eq!(s.lockspaces[1].resources[0].owners, [-1, -1, -1, 7]);

    set(
        &mut d,
        &["lockspaces", "0", "resources", "0", "owners", "0"],
        json!("1"),
    );
    assert!(err(&d).contains("owner 0 in lockspaces[0].resources[0]"));

    set(
        &mut d,
        &["lockspaces", "0", "resources"],
        json!([res("a", json!([1])), res("a", json!([2]))]),
    );
    assert!(err(&d).contains("appears twice"));

    set(
        &mut d,
        &["lockspaces", "0", "resources"],
        json!([res("a", json!([1]))]),
    );
    remove(&mut d, &["lockspaces", "0", "resources", "0"], "lockHeld");
    assert!(err(&d).starts_with("missing \"lockHeld\" in lockspaces[0].resources[0]"));

    remove(&mut d, &["lockspaces", "0"], "directory");
    assert!(err(&d).contains("\"directory\""));
    set(&mut d, &["lockspaces"], json!({}));
    assert!(err(&d).contains("\"lockspaces\""));
    set(&mut d, &["lockspaces"], json!([]));
    remove(&mut d, &[], "defaultLockspace");
    assert!(err(&d).contains("\"defaultLockspace\""));
}

#[test]
fn extra_top_level_keys_are_ignored() {
    // The hand-over code tags our output with its token right after the
    // opening brace; libvirt's reader and ours must both skip it.
    let text = to_json(&rich()).unwrap();
    let tagged = text.replacen('{', "{\n  \"virtlockdRsToken\": \"77\",", 1);
    assert_eq!(from_json(&tagged).unwrap(), json_view(rich()));
}

#[test]
fn not_json_or_not_an_object() {
    assert!(matches!(from_json("{"), Err(StateError::Invalid(_))));
    assert!(matches!(from_json("[]"), Err(StateError::Invalid(_))));
    assert!(matches!(from_json(""), Err(StateError::Invalid(_))));
}

// --- writing -------------------------------------------------------------

fn owner(id: u32, pid: u32, name: &[u8]) -> Option<OwnerState> {
    Some(OwnerState {
        uuid: [id as u8; 16],
        name: name.to_vec(),
        id,
        pid,
    })
}

fn rich() -> Snapshot {
    let path = format!("/var/lib/libvirt/lockd/files/{HEX}");
    let lock_clients = vec![
        ClientState {
            pending: vec![0, 0, 0, 0x1c, 1],
            ..client_state(
                9,
                10,
                1_700_000_000,
                Some(SessionState {
                    restricted: true,
                    owner: owner(1, 4000, "vmé".as_bytes()),
                }),
            )
        },
        client_state(10, 11, 0, Some(SessionState::default())),
        client_state(
            11,
            12,
            -5,
            Some(SessionState {
                restricted: false,
                owner: owner(7, u32::MAX, b"big-pid"),
            }),
        ),
    ];
    let admin_client = ClientState {
        pending: vec![9],
        ..client_state(2, 13, 1_700_000_100, None)
    };
    Snapshot {
        upgrades: 5,
        started_at: 1_600_000_000,
        fencing: vec![FenceState {
            pid: 4000,
            label: "vmé".into(),
        }],
        token: 77,
        ..snapshot(
            31337,
            vec![
                server_state(
                    LOCK_SERVER,
                    1024,
                    12,
                    &[(3, true), (4, false)],
                    lock_clients,
                ),
                server_state(ADMIN_SERVER, 5000, 3, &[(5, true)], vec![admin_client]),
            ],
            vec![
                lockspace_state(
                    None,
                    vec![ResourceState {
                        acquired_at: 1_700_000_001,
                        ..resource_state(
                            b"/images/disk.qcow2",
                            b"/images/disk.qcow2",
                            14,
                            (true, 3),
                            vec![-1, 4000, 4000],
                        )
                    }],
                ),
                lockspace_state(
                    Some(b"/var/lib/libvirt/lockd/files"),
                    vec![
                        ResourceState {
                            acquired_at: 7,
                            ..resource_state(
                                HEX.as_bytes(),
                                path.as_bytes(),
                                15,
                                (true, 2),
                                vec![i32::MIN],
                            )
                        },
                        ResourceState {
                            lost_reason: Some("another host or process holds the lock now".into()),
                            lost_since: 1_700_000_002,
                            ..resource_state(
                                b"quote\"back\\slash\ttab",
                                b"/var/lib/libvirt/lockd/files/quote\"back\\slash\ttab",
                                16,
                                (false, 0),
                                vec![],
                            )
                        },
                    ],
                ),
                lockspace_state(Some(b"/empty"), vec![]),
            ],
        )
    }
}

/// What survives a trip through JSON.
fn json_view(mut s: Snapshot) -> Snapshot {
    s.upgrades = 0;
    s.started_at = 0;
    s.fencing.clear();
    s.token = 0;
    s.timeout = None;
    for server in &mut s.servers {
        server.max_unauth_clients = None;
        server.prio_workers = None;
        for c in &mut server.clients {
            c.pending.clear();
        }
    }
    for ls in &mut s.lockspaces {
        for r in &mut ls.resources {
            r.acquired_at = 0;
            r.lost_reason = None;
            r.lost_since = 0;
            r.file_id = None;
        }
    }
    s
}

#[test]
fn round_trip() {
    let s = rich();
    let text = to_json(&s).unwrap();
    assert_eq!(from_json(&text).unwrap(), json_view(s.clone()));
    // And the reader's output writes the same document again.
    assert_eq!(to_json(&from_json(&text).unwrap()).unwrap(), text);
    // Spec Appendix B survives too (it differs from ours only in layout).
    let b = from_json(&appendix_b()).unwrap();
    assert_eq!(from_json(&to_json(&b).unwrap()).unwrap(), b);
    let o = from_json(OBSERVED).unwrap();
    assert_eq!(from_json(&to_json(&o).unwrap()).unwrap(), o);
}

#[test]
fn negative_owner_pid_round_trips() {
    let text = to_json(&rich()).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let owners = |v: &Value| v["resources"][0]["owners"].clone();
    assert_eq!(
        owners(&v["defaultLockspace"]),
        json!([4_294_967_295u32, 4000, 4000])
    );
    assert_eq!(owners(&v["lockspaces"][0]), json!([2_147_483_648u32]));
    let back = from_json(&text).unwrap();
    assert_eq!(back.lockspaces[0].resources[0].owners, [-1, 4000, 4000]);
    assert_eq!(back.lockspaces[1].resources[0].owners, [i32::MIN]);
}

#[test]
fn unregistered_client_gets_placeholder_owner() {
    let mut s = rich();
    s.servers[0].clients.truncate(2);
    s.servers[0].clients.remove(0);
    // A lock client without any session is written the same way.
    s.servers[0].clients.push(client_state(20, 20, 0, None));
    let text = to_json(&s).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    for c in v["daemon"]["servers"]["virtlockd"]["clients"]
        .as_array()
        .unwrap()
    {
        assert_eq!(
            c["privateData"],
            json!({"restricted": false, "ownerPid": 0, "ownerId": 0, "ownerName": "",
                   "ownerUUID": "00000000-0000-0000-0000-000000000000"})
        );
        // conn_time 0 is left out, as libvirt does.
        assert!(c.get("conn_time").is_none());
    }
    let back = from_json(&text).unwrap();
    for c in &back.servers[0].clients {
        assert_eq!(c.session, Some(SessionState::default()));
    }
}

/// Positions of `keys` (as `"key":`) found one after the other from `from`.
fn in_order(text: &str, from: &str, keys: &[&str]) {
    let mut pos = text
        .find(from)
        .unwrap_or_else(|| panic!("{from} not in {text}"));
    for key in keys {
        let needle = format!("\"{key}\":");
        match text[pos..].find(&needle) {
            Some(p) => pos += p + needle.len(),
            None => panic!("{key} not after position {pos} (from {from}) in {text}"),
        }
    }
}

#[test]
fn key_order_is_libvirts() {
    let text = to_json(&rich()).unwrap();
    // Top level.
    let top = ["daemon", "defaultLockspace", "lockspaces", "magic"];
    let pos: Vec<usize> = top
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    assert!(text.contains("\"magic\":\"31337\""));
    // Servers sorted by name, admin first.
    in_order(&text, "\"servers\"", &["admin", "virtlockd"]);
    let server = [
        "min_workers",
        "max_workers",
        "priority_workers",
        "max_clients",
        "max_anonymous_clients",
        "keepaliveInterval",
        "keepaliveCount",
        "next_client_id",
        "services",
        "auth",
        "readonly",
        "nrequests_client_max",
        "socks",
        "fd",
        "errfd",
        "pid",
        "isClient",
        "unlinkUNIX",
        "clients",
        "id",
        "auth",
        "auth_pending",
        "readonly",
        "nrequests_max",
        "conn_time",
        "sock",
        "fd",
        "errfd",
        "pid",
        "isClient",
        "unlinkUNIX",
        "privateData",
        "restricted",
        "ownerPid",
        "ownerId",
        "ownerName",
        "ownerUUID",
    ];
    in_order(&text, "\"virtlockd\":{", &server);
    // The admin server: same keys, empty private data.
    in_order(&text, "\"admin\":{", &server[..32]);
    assert!(text.contains("\"privateData\":{}"));
    let resource = ["name", "path", "fd", "lockHeld", "flags", "owners"];
    in_order(
        &text,
        "\"defaultLockspace\"",
        &[&["resources"][..], &resource].concat(),
    );
    in_order(
        &text,
        "\"lockspaces\"",
        &[&["directory", "resources"][..], &resource].concat(),
    );
    // No directory key for the default lockspace.
    let default =
        &text[text.find("\"defaultLockspace\"").unwrap()..text.find("\"lockspaces\"").unwrap()];
    assert!(!default.contains("directory"));
}

#[test]
fn exact_text_of_a_small_snapshot() {
    let s = Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        magic: 7,
        servers: vec![ServerState {
            name: LOCK_SERVER.into(),
            max_clients: 4,
            next_client_id: 2,
            listeners: vec![ListenerState {
                fd: 3,
                unlink: true,
            }],
            clients: vec![ClientState {
                id: 1,
                fd: 6,
                conn_time: 99,
                session: Some(SessionState {
                    restricted: false,
                    owner: Some(OwnerState {
                        uuid: [
                            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb,
                            0xcc, 0xdd, 0xee, 0xff,
                        ],
                        name: b"vm".to_vec(),
                        id: 3,
                        pid: 42,
                    }),
                }),
                pending: vec![],
                peer_pid: None,
                peer_ids: None,
            }],
            max_unauth_clients: None,
            prio_workers: None,
        }],
        lockspaces: vec![LockspaceState {
            directory: Some(b"/d".to_vec()),
            owners: Vec::new(),
            resources: vec![ResourceState {
                name: b"r".to_vec(),
                path: b"/d/r".to_vec(),
                fd: 5,
                lock_held: true,
                flags: 2,
                owners: vec![-1],
                acquired_at: 1,
                lost_reason: None,
                lost_since: 0,
                file_id: None,
                ofd: false,
                tag: 0,
            }],
        }],
        upgrades: 0,
        started_at: 0,
        fencing: vec![],
        token: 0,
        timeout: None,
        crash: None,
        stale_fds: Vec::new(),
    };
    let expected =
        include_str!("../../../tests/fixtures/libvirt-state/small-snapshot-written.json");
    assert_eq!(to_json(&s).unwrap(), compact(expected));
}

#[test]
fn writer_refusals_and_clamps() {
    let mut s = rich();
    s.servers[1].name = "testServer1".into();
    assert!(matches!(to_json(&s), Err(StateError::Invalid(m)) if m.contains("testServer1")));

    let mut s = rich();
    s.servers[1].name = LOCK_SERVER.into();
    assert!(matches!(to_json(&s), Err(StateError::Invalid(m)) if m.contains("twice")));

    let mut s = rich();
    s.lockspaces[1].directory = None;
    assert!(to_json(&s).is_err());

    // No admin server, no default lockspace, huge max_clients.
    let mut s = rich();
    s.servers.truncate(1);
    s.lockspaces.remove(0);
    s.servers[0].max_clients = u64::MAX;
    let text = to_json(&s).unwrap();
    assert!(!text.contains("\"admin\""));
    assert!(text.contains("\"max_clients\":4294967295"));
    let back = from_json(&text).unwrap();
    assert_eq!(back.servers.len(), 1);
    assert_eq!(back.servers[0].max_clients, u64::from(u32::MAX));
    assert_eq!(
        back.lockspaces[0],
        LockspaceState {
            directory: None,
            owners: Vec::new(),
            resources: vec![]
        }
    );
}

#[test]
fn non_utf8_bytes_are_written_lossily() {
    let mut s = rich();
    s.lockspaces[1].resources[1].name = b"bad\xffname".to_vec();
    s.servers[0].clients[0].session = Some(SessionState {
        restricted: false,
        owner: owner(1, 1, b"\xfe"),
    });
    let back = from_json(&to_json(&s).unwrap()).unwrap();
    assert_eq!(
        back.lockspaces[1].resources[1].name,
        "bad\u{fffd}name".as_bytes()
    );
    let name = back.servers[0].clients[0]
        .session
        .clone()
        .unwrap()
        .owner
        .unwrap()
        .name;
    assert_eq!(name, "\u{fffd}".as_bytes());
}
