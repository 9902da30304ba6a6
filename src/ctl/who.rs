//! Which leases belong to a disk path. libvirt's lockd plugin takes a disk's
//! lease either directly (default lockspace, the name is the path) or in a file
//! lockspace under the lowercase hex SHA-256 of the path string as written in
//! the domain XML (spec §7.3). The path is matched as given and canonicalized.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::names::lease_name;
use crate::protocol::inspect::LeaseView;

/// The spellings of `path` a lease may have been taken under.
fn spellings(path: &Path) -> Vec<Vec<u8>> {
    let mut out = vec![path.as_os_str().as_bytes().to_vec()];
    if let Ok(c) = std::fs::canonicalize(path) {
        let c = c.as_os_str().as_bytes().to_vec();
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The leases among `leases` that protect `path`.
pub fn leases_of(path: &Path, leases: &[LeaseView]) -> Vec<LeaseView> {
    let names = spellings(path);
    let hashed: Vec<Vec<u8>> = names.iter().map(|n| lease_name(n).into_bytes()).collect();
    leases
        .iter()
        .filter(|l| match l.lockspace {
            None => names.contains(&l.name),
            Some(_) => hashed.contains(&l.name),
        })
        .cloned()
        .collect()
}
