//! The 24-byte RPC header that follows the length word of every packet.

use bytes::{BufMut, BytesMut};

use super::xdr::{XdrError, XdrReader};

/// Size of the encoded header in bytes.
pub const HEADER_LEN: usize = 24;

/// `virNetMessageType` values.
pub mod msg_type {
    pub const CALL: i32 = 0;
    pub const REPLY: i32 = 1;
    pub const MESSAGE: i32 = 2;
    pub const STREAM: i32 = 3;
    pub const CALL_WITH_FDS: i32 = 4;
    pub const REPLY_WITH_FDS: i32 = 5;
    pub const STREAM_HOLE: i32 = 6;
}

/// `virNetMessageStatus` values.
pub mod status {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const CONTINUE: i32 = 2;
}

/// One RPC header. Fields keep their raw wire values: unknown types and statuses
/// must be answered (or ignored) as libvirt does, not rejected by the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub prog: u32,
    pub vers: u32,
    pub proc_: i32,
    pub msg_type: i32,
    pub serial: u32,
    pub status: i32,
}

impl Header {
    /// Parses exactly one header; infallible because the size is fixed.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self {
            prog: word(0),
            vers: word(4),
            proc_: word(8) as i32,
            msg_type: word(12) as i32,
            serial: word(16),
            status: word(20) as i32,
        }
    }

    pub fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            prog: r.u32()?,
            vers: r.u32()?,
            proc_: r.i32()?,
            msg_type: r.i32()?,
            serial: r.u32()?,
            status: r.i32()?,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32(self.prog);
        out.put_u32(self.vers);
        out.put_i32(self.proc_);
        out.put_i32(self.msg_type);
        out.put_u32(self.serial);
        out.put_i32(self.status);
    }

    /// The header of a reply to this call: same program, version, procedure and serial.
    pub fn reply(&self, status: i32) -> Self {
        Self {
            msg_type: msg_type::REPLY,
            status,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libvirt's tests/virnetmessagetest.c header vector.
    #[test]
    fn encodes_libvirt_header_vector() {
        let h = Header {
            prog: 0x1122_3344,
            vers: 1,
            proc_: 0x666,
            msg_type: msg_type::CALL,
            serial: 0x99,
            status: status::OK,
        };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(
            &b[..],
            &[
                0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1, 0, 0, 0x06, 0x66, 0, 0, 0, 0, 0, 0, 0, 0x99, 0,
                0, 0, 0
            ]
        );
        assert_eq!(Header::decode(&mut XdrReader::new(&b)).unwrap(), h);
        assert_eq!(Header::parse(b[..].try_into().unwrap()), h);
    }
}
