//! The packet codec and header as the daemon reads them from any local client:
//! a byte stream cut into packets, each routed for both served programs.
//!
//! Asserts: no panic; a decoded packet re-encodes to exactly the bytes it was
//! cut from; the header's two decoders agree; a stream fed in two pieces gives
//! the same packets as fed whole; an incomplete packet leaves the buffer as it
//! was; a length word is refused exactly when it is out of range.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use virtlockd::protocol::codec::{FrameCodec, FrameError, MAX_MESSAGE, MIN_PACKET};
use virtlockd::protocol::header::{Header, HEADER_LEN};
use virtlockd::protocol::xdr::XdrReader;
use virtlockd::protocol::{admin, lock, route, Frame, Route};

/// What decoding a whole stream gives: the packets, and how it ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Waiting for more bytes (an incomplete packet, or nothing left).
    More,
    TooShort(u32),
    TooLarge(u32),
}

fn decode_all(src: &mut BytesMut, frames: &mut Vec<Frame>) -> End {
    loop {
        let before = src.clone();
        match FrameCodec.decode(src) {
            Ok(Some(frame)) => {
                let consumed = before.len() - src.len();
                let mut again = BytesMut::new();
                FrameCodec
                    .encode(frame.clone(), &mut again)
                    .expect("encoding cannot fail");
                assert_eq!(&again[..], &before[..consumed], "re-encoding differs");
                check_header(&before[4..4 + HEADER_LEN], &frame.header);
                frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(
                    &src[..],
                    &before[..],
                    "an incomplete packet changed the buffer"
                );
                if src.len() >= 4 {
                    let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
                    assert!(src.len() < len, "a complete packet was not returned");
                }
                return End::More;
            }
            Err(FrameError::TooShort(len)) => {
                assert!((len as usize) < MIN_PACKET);
                return End::TooShort(len);
            }
            Err(FrameError::TooLarge(len)) => {
                assert!(len as usize - 4 > MAX_MESSAGE);
                return End::TooLarge(len);
            }
            Err(FrameError::Io(e)) => panic!("the decoder made up an I/O error: {e}"),
        }
    }
}

fn check_header(raw: &[u8], parsed: &Header) {
    let fixed: &[u8; HEADER_LEN] = raw.try_into().expect("24 bytes");
    assert_eq!(&Header::parse(fixed), parsed);
    let decoded = Header::decode(&mut XdrReader::new(raw)).expect("24 bytes decode");
    assert_eq!(&decoded, parsed);
}

/// The daemon's path after framing: route for each server, decode the call.
fn serve(frame: &Frame) {
    let original = frame.payload.clone();
    match route(frame.clone(), lock::PROGRAM, lock::VERSION) {
        Route::Call { payload } => {
            assert!(original.ends_with(&payload));
            if let Some(p) = lock::Procedure::from_wire(frame.header.proc_) {
                if let Ok(call) = lock::LockCall::decode(p, &payload) {
                    let _ = call.check_flags();
                }
            }
        }
        Route::Reject(e) => assert!(!e.message.is_empty()),
        Route::Ping | Route::Ignore | Route::Close(_) => {}
    }
    if let Route::Call { payload } = route(frame.clone(), admin::PROGRAM, admin::VERSION) {
        let _ = admin::AdminCall::decode(frame.header.proc_, &payload);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose where the stream is cut in two reads.
    let (cut, stream) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => return,
    };
    let mut whole = BytesMut::from(stream);
    let mut frames = Vec::new();
    let end = decode_all(&mut whole, &mut frames);

    let cut = cut.min(stream.len());
    let mut pieces = BytesMut::from(&stream[..cut]);
    let mut frames_in_pieces = Vec::new();
    let first_end = decode_all(&mut pieces, &mut frames_in_pieces);
    let end_in_pieces = if first_end == End::More {
        pieces.extend_from_slice(&stream[cut..]);
        decode_all(&mut pieces, &mut frames_in_pieces)
    } else {
        first_end
    };
    assert_eq!(frames, frames_in_pieces);
    assert_eq!(end, end_in_pieces);
    if end == End::More {
        assert_eq!(whole, pieces);
    }

    for frame in &frames {
        serve(frame);
    }
});
