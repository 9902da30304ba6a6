//! How libvirt writes names and ids as text, in one place for the daemon,
//! `virtlockctl`, the examples and the tests: bytes from the wire as lossy
//! UTF-8, UUIDs, and the lease name its lockd plugin gives a disk path.

use sha2::{Digest, Sha256};

/// Bytes from the wire (paths, resource and owner names) as message and log
/// text: invalid UTF-8 becomes U+FFFD.
pub fn lossy_utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Canonical lowercase UUID text (`virUUIDFormat`: 8-4-4-4-12), as libvirt
/// logs and stores it.
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// libvirt's lease name of a disk path in a file lockspace: the lowercase hex
/// SHA-256 of the path string as written in the domain XML (spec §7.3).
pub fn lease_name(disk_path: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(disk_path);
    let mut out = String::with_capacity(2 * digest.len());
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text() {
        let mut u = [0u8; 16];
        for (i, b) in u.iter_mut().enumerate() {
            *b = (i * 0x11) as u8;
        }
        assert_eq!(uuid_string(&u), "00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn sha256_lease_name_as_libvirt() {
        // echo -n abc | sha256sum
        assert_eq!(
            lease_name(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(lease_name(b"").len(), 64);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(lossy_utf8(b"vm\xff"), "vm\u{fffd}");
    }
}
