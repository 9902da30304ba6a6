//! Raw calls of libvirt's admin program on a daemon's admin socket.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use virtlockd::client::{Client, ClientError};
use virtlockd::protocol::admin::{self, procedure as p, TypedParam};
use virtlockd::protocol::xdr::XdrWrite;

use super::daemon::Daemon;
use super::namespaced::Namespaced;
use super::wait::within;

/// A connection to `d`'s admin socket (bound before [`Daemon::start`] returns).
pub async fn admin_client(d: &Daemon) -> Client {
    Client::connect(d.admin_socket())
        .await
        .expect("connect admin socket")
}

/// Waits until a namespaced daemon's admin socket accepts connections.
pub async fn admin_ready(ns: &mut Namespaced) -> PathBuf {
    let socket = ns.inside("/run/libvirt/virtlockd-admin-sock");
    let answered = within(Duration::from_secs(10), || {
        ns.assert_alive("starting");
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })
    .await;
    assert!(answered, "admin socket never answered");
    socket
}

pub async fn call(c: &mut Client, proc_: i32, args: BytesMut) -> Result<Bytes, ClientError> {
    c.call_program(admin::PROGRAM, admin::VERSION, proc_, args.freeze())
        .await
}

pub fn args(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    f(&mut b);
    b
}

/// Arguments that are only a flags word.
pub fn flags_args(flags: u32) -> BytesMut {
    args(|b| b.put_xdr_u32(flags))
}

pub fn server_args(name: &str, flags: u32) -> BytesMut {
    args(|b| {
        b.put_xdr_string(name.as_bytes());
        b.put_xdr_u32(flags);
    })
}

pub fn client_args(server: &str, id: u64, flags: u32) -> BytesMut {
    args(|b| {
        b.put_xdr_string(server.as_bytes());
        b.put_xdr_u64(id);
        b.put_xdr_u64(0);
        b.put_xdr_u32(0);
        b.put_xdr_u32(flags);
    })
}

pub fn params_args(server: &str, params: &[TypedParam], flags: u32) -> BytesMut {
    args(|b| {
        b.put_xdr_string(server.as_bytes());
        b.put_xdr_u32(params.len() as u32);
        for p in params {
            p.encode(b);
        }
        b.put_xdr_u32(flags);
    })
}

/// CONNECT_SET_DAEMON_TIMEOUT's arguments: seconds, flags.
pub fn daemon_timeout_args(seconds: u32, flags: u32) -> BytesMut {
    args(|b| {
        b.put_xdr_u32(seconds);
        b.put_xdr_u32(flags);
    })
}

/// DAEMON_SHUTDOWN with the PRESERVE flag, which must be accepted.
pub async fn shut_down(admin: &mut Client) {
    call(
        admin,
        p::CONNECT_DAEMON_SHUTDOWN,
        flags_args(admin::DAEMON_SHUTDOWN_PRESERVE),
    )
    .await
    .unwrap();
}

/// The lock clients' ids in connection order (srv-clients-list over the wire).
pub async fn lock_client_ids(admin: &mut Client) -> Vec<u64> {
    let mut a = BytesMut::new();
    a.put_xdr_string(b"virtlockd");
    a.put_xdr_u32(1);
    a.put_xdr_u32(0);
    let reply = call(admin, p::SERVER_LIST_CLIENTS, a).await.unwrap();
    let (clients, n) = admin::decode_clients(&reply).unwrap();
    assert_eq!(clients.len(), n as usize);
    clients.into_iter().map(|c| c.id).collect()
}
