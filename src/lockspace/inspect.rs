//! The lock table as inspection shows it: each held resource with its file,
//! mode, acquisition time and owners (with what they registered, where known).

use std::os::unix::ffi::OsStrExt;

use super::LockSpace;
use crate::protocol::inspect::{LeaseStatus, LeaseView, OwnerDetails, OwnerView};

/// Every resource held in `space`.
pub fn leases(space: &LockSpace) -> Vec<LeaseView> {
    let lockspace = (!space.key().is_empty()).then(|| space.key().to_vec());
    space
        .resources
        .iter()
        .map(|(name, r)| LeaseView {
            lockspace: lockspace.clone(),
            name: name.to_vec(),
            path: space.path_of(name).as_os_str().as_bytes().to_vec(),
            shared: r.shared(),
            autocreate: r.autocreate(),
            acquired_at: r.acquired_at,
            status: match &r.status {
                super::LeaseStatus::Held => LeaseStatus::Held,
                super::LeaseStatus::Lost(l) => LeaseStatus::Lost {
                    reason: l.cause.to_string(),
                    since: crate::clock::epoch_seconds(l.since),
                },
            },
            owners: r
                .owners
                .iter()
                .map(|&pid| OwnerView {
                    pid,
                    details: space.owner_details(pid).map(|o| OwnerDetails {
                        name: o.name.clone(),
                        uuid: o.uuid,
                        id: o.id,
                    }),
                })
                .collect(),
        })
        .collect()
}
