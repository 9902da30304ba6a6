//! The usual start of a lock test: a registered client, a lockspace, a held
//! lease; and the check of an error reply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use virtlockd::client::{owner, Client, ClientError};
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;
use virtlockd::protocol::Frame;

use super::daemon::{bytes, Daemon};

/// A fake owner pid: no such process exists, and it is never the test
/// runner's own, so nothing is ever fenced for it.
pub const FAKE_PID: u32 = 4_000_001;

/// A client of `d` registered as owner "vm" (id 1) with the pid `pid`.
pub async fn registered(d: &Daemon, pid: u32) -> Client {
    let mut c = d.client().await;
    c.register(&owner("vm", 1, pid)).await.unwrap();
    c
}

/// Creates the directory lockspace `<base>/<name>` through `c`; returns its path.
pub async fn lockspace(d: &Daemon, c: &mut Client, name: &str) -> PathBuf {
    let ls = d.base().join(name);
    c.create_lockspace(&bytes(&ls)).await.unwrap();
    ls
}

/// A client of `d` that created the lockspace `ls`, registered as owner "vm"
/// (id 1, [`FAKE_PID`]) and holds `lease` in it exclusively (AUTOCREATE).
pub async fn holding(d: &Daemon, ls: &Path, lease: &[u8]) -> Client {
    let mut c = d.client().await;
    c.create_lockspace(&bytes(ls)).await.unwrap();
    c.register(&owner("vm", 1, FAKE_PID)).await.unwrap();
    c.acquire(&bytes(ls), lease, ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    c
}

/// How long a reply the test waits for may take.
const REPLY: Duration = Duration::from_secs(5);

/// The next frame on `c`, or `None` if the daemon closed the connection;
/// fails with `what` if none came within 5 s.
pub async fn next_frame(c: &mut Client, what: &str) -> Option<Frame> {
    tokio::time::timeout(REPLY, c.recv_frame())
        .await
        .expect(what)
        .unwrap()
}

/// Asserts that `r` is an error reply with exactly these fields.
#[track_caller]
pub fn assert_err<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    code: i32,
    domain: i32,
    message: &str,
) {
    match r {
        Ok(v) => panic!("expected error {code}/{domain} `{message}`, got OK {v:?}"),
        Err(e) => {
            let e = e
                .remote()
                .unwrap_or_else(|| panic!("expected a remote error, got {e}"));
            assert_eq!(
                (e.code, e.domain, e.message.as_str()),
                (code, domain, message),
                "full error: {e:?}"
            );
        }
    }
}
