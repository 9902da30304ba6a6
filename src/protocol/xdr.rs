//! XDR (RFC 4506) primitives as libvirt's RPC uses them: big-endian 4-byte units,
//! length-prefixed strings padded to 4 bytes, optional values as a 0/1 discriminant.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Why a payload could not be decoded. The daemon maps every variant to the same
/// RPC error ("Unable to decode message payload"); the detail is for logs and tests.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum XdrError {
    #[error("payload ended {needed} bytes early")]
    Truncated { needed: usize },
    #[error("string of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("invalid optional discriminant {0}")]
    BadDiscriminant(u32),
}

/// Reads XDR values from a byte slice, front to back.
#[derive(Debug)]
pub struct XdrReader<'a> {
    buf: &'a [u8],
}

impl<'a> XdrReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not consumed yet. libvirt ignores trailing bytes, and so do we.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if self.buf.len() < n {
            return Err(XdrError::Truncated {
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self) -> Result<i32, XdrError> {
        self.u32().map(|v| v as i32)
    }

    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let hi = self.u32()? as u64;
        let lo = self.u32()? as u64;
        Ok((hi << 32) | lo)
    }

    pub fn i64(&mut self) -> Result<i64, XdrError> {
        self.u64().map(|v| v as i64)
    }

    /// Fixed-length opaque data (`opaque x[N]`), padding skipped.
    pub fn opaque_fixed(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    /// `string<max>` as raw bytes. Padding content is not checked (libvirt accepts
    /// non-zero padding). The length is checked against `max` before anything is read,
    /// so a huge declared length costs nothing.
    pub fn string(&mut self, max: usize) -> Result<&'a [u8], XdrError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        self.opaque_fixed(len)
    }

    /// `string<max>` as libvirt's C code sees it: an embedded NUL ends the string.
    pub fn c_string(&mut self, max: usize) -> Result<&'a [u8], XdrError> {
        let s = self.string(max)?;
        Ok(match s.iter().position(|&b| b == 0) {
            Some(nul) => &s[..nul],
            None => s,
        })
    }

    /// `T *` discriminant: `true` when a value follows.
    pub fn optional(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            d => Err(XdrError::BadDiscriminant(d)),
        }
    }
}

/// Number of zero bytes that pad `n` bytes to a 4-byte boundary.
pub const fn pad(n: usize) -> usize {
    (4 - (n % 4)) % 4
}

/// Appends XDR values to a buffer.
pub trait XdrWrite {
    fn put_xdr_u32(&mut self, v: u32);
    fn put_xdr_i32(&mut self, v: i32);
    fn put_xdr_u64(&mut self, v: u64);
    fn put_xdr_opaque_fixed(&mut self, data: &[u8]);
    fn put_xdr_string(&mut self, s: &[u8]);
    fn put_xdr_opt_string(&mut self, s: Option<&[u8]>);
}

impl XdrWrite for BytesMut {
    fn put_xdr_u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn put_xdr_i32(&mut self, v: i32) {
        self.put_i32(v);
    }
    fn put_xdr_u64(&mut self, v: u64) {
        self.put_u64(v);
    }
    fn put_xdr_opaque_fixed(&mut self, data: &[u8]) {
        self.put_slice(data);
        self.put_bytes(0, pad(data.len()));
    }
    fn put_xdr_string(&mut self, s: &[u8]) {
        self.put_u32(s.len() as u32);
        self.put_xdr_opaque_fixed(s);
    }
    fn put_xdr_opt_string(&mut self, s: Option<&[u8]>) {
        match s {
            Some(s) => {
                self.put_u32(1);
                self.put_xdr_string(s);
            }
            None => self.put_u32(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trip_with_padding() {
        let mut b = BytesMut::new();
        b.put_xdr_string(b"vm1");
        assert_eq!(&b[..], &[0, 0, 0, 3, b'v', b'm', b'1', 0]);
        let mut r = XdrReader::new(&b);
        assert_eq!(r.string(16).unwrap(), b"vm1");
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn string_limit_is_checked_before_reading() {
        let b = [0xff, 0xff, 0xff, 0xff];
        let mut r = XdrReader::new(&b);
        assert_eq!(
            r.string(65536),
            Err(XdrError::TooLong {
                len: 0xffff_ffff,
                max: 65536
            })
        );
    }

    #[test]
    fn c_string_stops_at_nul_and_padding_may_be_nonzero() {
        let b = [0, 0, 0, 5, b'a', b'b', 0, b'c', b'd', 0xaa, 0xbb, 0xcc];
        let mut r = XdrReader::new(&b);
        assert_eq!(r.c_string(100).unwrap(), b"ab");
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut r = XdrReader::new(&[0, 0]);
        assert_eq!(r.u32(), Err(XdrError::Truncated { needed: 2 }));
        let mut r = XdrReader::new(&[0, 0, 0, 9, b'x']);
        assert!(matches!(r.string(100), Err(XdrError::Truncated { .. })));
    }

    #[test]
    fn hyper_round_trip() {
        let mut b = BytesMut::new();
        b.put_xdr_u64(0x0102_0304_0506_0708);
        assert_eq!(XdrReader::new(&b).u64().unwrap(), 0x0102_0304_0506_0708);
    }
}
