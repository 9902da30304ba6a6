//! Which leases belong to a disk path. libvirt's lockd plugin takes a disk's
//! lease either directly (default lockspace, the name is the path) or in a file
//! lockspace under the lowercase hex SHA-256 of the path string as written in
//! the domain XML (spec §7.3). The path is matched as given and canonicalized.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::protocol::inspect::LeaseView;

/// libvirt's lease name of a disk path in a file lockspace.
pub fn lease_name(path: &[u8]) -> String {
    Sha256::digest(path)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_name_as_libvirt() {
        // echo -n /var/lib/libvirt/images/demo.qcow2 | sha256sum
        assert_eq!(lease_name(b"").len(), 64);
        assert_eq!(
            lease_name(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
