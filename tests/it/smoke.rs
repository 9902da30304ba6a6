//! The daemon starts, answers, and holds a real kernel lock.

use virtlockd::client::owner;
use virtlockd::protocol::lock::ACQUIRE_AUTOCREATE;

use crate::harness::{bytes, Daemon};

#[tokio::test]
async fn acquire_shows_in_proc_locks_and_release_removes_the_file() {
    let d = Daemon::start();
    let ls = d.base().join("ls");
    let mut c = d.client().await;
    c.create_lockspace(&bytes(&ls)).await.unwrap();
    c.register(&owner("vm1", 1, 4_000_001)).await.unwrap();
    c.acquire(&bytes(&ls), b"r1", ACQUIRE_AUTOCREATE)
        .await
        .unwrap();
    assert_eq!(d.kernel_locks_on(&ls.join("r1")), ["POSIX WRITE 0-0"]);
    c.release(&bytes(&ls), b"r1").await.unwrap();
    assert!(!ls.join("r1").exists());
    c.ping().await.unwrap();
}
