//! Gathers what the inspection program reports: leases from every lockspace
//! actor, connections from the client table, and the daemon summary.

use std::collections::HashMap;
use std::time::Duration;

use super::admin::LIBVIRT_VERSION;
use super::admin_state::AdminState;
use super::clients::ClientRecord;
use super::lockspace::Inspect;
use super::lockspace_table::LockspaceTable;
use super::supervisor::Server;
use crate::protocol::inspect::{
    ClientView, CrashSafetyView, LeaseView, OwnerDetails, OwnerView, StatusView,
};

/// How long inspection waits for one lockspace: one on a hung mount is left
/// out rather than holding up the answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// Every lease of every lockspace, the default lockspace's first, then by
/// lockspace and name.
pub async fn leases(lockspaces: &LockspaceTable) -> Vec<LeaseView> {
    let asks = lockspaces.all().into_iter().map(|ls| async move {
        tokio::time::timeout(PATIENCE, ls.send(Inspect))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    });
    let mut all: Vec<LeaseView> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_by(|a, b| (&a.lockspace, &a.name).cmp(&(&b.lockspace, &b.name)));
    all
}

/// The client table's rows, both servers, in (server, id) order.
pub fn client_rows(st: &AdminState) -> Vec<(Server, u64, ClientRecord)> {
    [Server::Lock, Server::Admin]
        .into_iter()
        .flat_map(|s| st.clients.of(s).into_iter().map(move |(id, r)| (s, id, r)))
        .collect()
}

/// Connections with the number of leases their registered owner holds.
pub fn clients(rows: Vec<(Server, u64, ClientRecord)>, leases: &[LeaseView]) -> Vec<ClientView> {
    let mut held: HashMap<i32, u32> = HashMap::new();
    for l in leases {
        for o in &l.owners {
            *held.entry(o.pid).or_default() += 1;
        }
    }
    rows.into_iter()
        .map(|(server, id, r)| {
            let owner = r.owner.as_ref().map(|o| OwnerView {
                pid: o.pid as i32,
                details: Some(OwnerDetails {
                    name: o.name.clone(),
                    uuid: o.uuid,
                    id: o.id,
                }),
            });
            let leases = owner
                .as_ref()
                .and_then(|o| held.get(&o.pid).copied())
                .unwrap_or(0);
            ClientView {
                server: server.name().to_owned(),
                id,
                pid: r.peer.pid,
                uid: r.peer.uid,
                connected_at: r.conn_time,
                owner,
                restricted: r.restricted,
                leases,
            }
        })
        .collect()
}

pub fn status(st: &AdminState) -> StatusView {
    StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        libvirt_version: LIBVIRT_VERSION,
        pid: std::process::id(),
        started_at: st.info.started_at,
        now: crate::clock::now_epoch_seconds(),
        upgrades: st.info.upgrades,
        lock_clients: st.clients.count(Server::Lock) as u32,
        admin_clients: st.clients.count(Server::Admin) as u32,
        lockspaces: st.lockspaces.all().len() as u32,
        leases: st.leases.get() as u64,
        crash_safety: Some(crash_safety(crate::crash::status())),
    }
}

fn crash_safety(s: crate::crash::Status) -> CrashSafetyView {
    CrashSafetyView {
        mode: s.mode.name().to_owned(),
        reason: s.mode.reason().to_owned(),
        parked: s.parked,
        journal_bytes: s.journal_bytes,
        generation: s.generation,
        recoveries: s.recoveries,
    }
}

/// Releases the lease an unknown owner holds on `path` (see
/// `crate::restore::crash`): only such a lease, never one with a known owner.
pub async fn release_unknown(
    default: Option<actix::Addr<super::lockspace::LockspaceActor>>,
    path: Vec<u8>,
) -> Result<bytes::Bytes, crate::protocol::RemoteError> {
    use crate::lockspace::LockError;
    use crate::protocol::error::{code, domain};
    let shown = crate::names::lossy_utf8(&path);
    let Some(default) = default else {
        return Err(crate::protocol::RemoteError::rpc("no default lockspace"));
    };
    let release = super::lockspace::Release {
        name: bytes::Bytes::from(path),
        owner: crate::restore::crash::UNKNOWN_OWNER,
    };
    match default.send(release).await {
        Ok(Ok(())) => {
            tracing::warn!(path = %shown, "lease of an unknown owner released by the administrator");
            Ok(bytes::Bytes::new())
        }
        Ok(Err(LockError::NotLocked(_))) => Err(crate::protocol::RemoteError::new(
            code::OPERATION_INVALID,
            domain::LOCKSPACE,
            format!("no lease of an unknown owner on {shown}"),
        )),
        Ok(Err(LockError::NotOwner(_))) => Err(crate::protocol::RemoteError::new(
            code::OPERATION_INVALID,
            domain::LOCKSPACE,
            format!("the lease on {shown} has a known owner: its owner releases it"),
        )),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(crate::protocol::RemoteError::rpc(format!(
            "daemon unavailable: {e}"
        ))),
    }
}
