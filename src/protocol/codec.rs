//! Packet framing: a big-endian length word that counts itself, then the header and
//! the payload. Implemented as a tokio-util codec so connections read with `FramedRead`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use super::header::{Header, HEADER_LEN};

/// Largest header + payload libvirt 9.0 accepts (`VIR_NET_MESSAGE_MAX`).
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;
/// Size of the length word.
pub const LEN_WORD: usize = 4;
/// Smallest valid packet: length word + header, empty payload.
pub const MIN_PACKET: usize = LEN_WORD + HEADER_LEN;
/// How much buffer one read may add for a packet that is still arriving. A client
/// that announces 32 MiB gets memory only as fast as it actually sends bytes.
const READ_CHUNK: usize = 64 * 1024;

/// One packet: its header and the undecoded payload after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Bytes,
}

/// Framing errors. Each one closes only the connection it happened on.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("packet length {0} is shorter than a header")]
    TooShort(u32),
    #[error("packet {} bytes received from client too large, want {MAX_MESSAGE}", .0 - 4)]
    TooLarge(u32),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The libvirt RPC packet codec (both directions).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < LEN_WORD {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if (len as usize) < MIN_PACKET {
            return Err(FrameError::TooShort(len));
        }
        if len as usize - LEN_WORD > MAX_MESSAGE {
            return Err(FrameError::TooLarge(len));
        }
        let len = len as usize;
        if src.len() < len {
            src.reserve((len - src.len()).min(READ_CHUNK));
            return Ok(None);
        }
        let mut packet = src.split_to(len);
        packet.advance(LEN_WORD);
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&packet[..HEADER_LEN]);
        packet.advance(HEADER_LEN);
        let header = Header::parse(&raw);
        Ok(Some(Frame {
            header,
            payload: packet.freeze(),
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let total = MIN_PACKET + frame.payload.len();
        dst.reserve(total);
        dst.put_u32(total as u32);
        frame.header.encode(dst);
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::{msg_type, status};

    fn packet(len: u32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(len);
        b.put_slice(body);
        b
    }

    #[test]
    fn short_lengths_are_fatal() {
        for len in [0u32, 3, 4, 8, 27] {
            let mut b = packet(len, &[0; 40]);
            assert!(matches!(
                FrameCodec.decode(&mut b),
                Err(FrameError::TooShort(_))
            ));
        }
    }

    #[test]
    fn lengths_over_32_mib_are_fatal_and_the_limit_itself_is_not() {
        let mut b = packet(33_554_437, &[]);
        assert!(matches!(
            FrameCodec.decode(&mut b),
            Err(FrameError::TooLarge(_))
        ));
        let mut b = packet(33_554_436, &[0; 24]);
        assert!(FrameCodec.decode(&mut b).unwrap().is_none());
        // Announcing 32 MiB must not allocate 32 MiB up front.
        assert!(b.capacity() < 1024 * 1024);
    }

    #[test]
    fn waits_for_the_whole_packet_then_splits_exactly() {
        let mut b = packet(28, &[0, 0, 0, 1]);
        assert!(FrameCodec.decode(&mut b).unwrap().is_none());
        b.put_slice(&[0; 20]);
        b.put_slice(&[9, 9]); // start of the next packet
        let f = FrameCodec.decode(&mut b).unwrap().unwrap();
        assert_eq!(f.header.prog, 1);
        assert!(f.payload.is_empty());
        assert_eq!(&b[..], &[9, 9]);
    }

    #[test]
    fn encode_counts_the_length_word() {
        let mut out = BytesMut::new();
        let header = Header {
            prog: 0x6b65_6570,
            vers: 1,
            proc_: 2,
            msg_type: msg_type::MESSAGE,
            serial: 0,
            status: status::OK,
        };
        FrameCodec
            .encode(
                Frame {
                    header,
                    payload: Bytes::new(),
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..4], &[0, 0, 0, 0x1c]);
    }
}
