//! libvirt's RPC wire protocol as virtlockd speaks it: framing, XDR, the header,
//! the error struct, the lock program and keepalive. No actors and no I/O here:
//! everything is a pure function of bytes, so it is tested byte for byte.

pub mod admin;
pub mod codec;
pub mod error;
pub mod header;
pub mod inspect;
pub mod lock;
pub mod typed_params;
pub mod xdr;

use bytes::{Bytes, BytesMut};

pub use codec::{Frame, FrameCodec, FrameError};
pub use error::RemoteError;
pub use header::{msg_type, status, Header};

/// Keepalive program ("keep"), version 1.
pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
pub const KEEPALIVE_VERSION: u32 = 1;
pub const KEEPALIVE_PING: i32 = 1;
pub const KEEPALIVE_PONG: i32 = 2;
/// `VIR_NET_MESSAGE_NUM_FDS_MAX`.
pub const MAX_FDS: u32 = 32;

/// What the server does with an incoming packet, per libvirt's dispatch order
/// (spec §2.5). Procedure lookup and argument decoding are the program's business.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// A call to the served program: dispatch `payload` (FD count already stripped).
    Call { payload: Bytes },
    /// Answer with this error, keep the connection.
    Reject(RemoteError),
    /// Keepalive PING: answer with [`pong`].
    Ping,
    /// Write nothing, keep the connection.
    Ignore,
    /// Close this connection without a reply.
    Close(&'static str),
}

/// Routes one packet for a server that serves exactly `program`/`version`.
pub fn route(frame: Frame, program: u32, version: u32) -> Route {
    let h = frame.header;
    let mut payload = frame.payload;
    if h.msg_type == msg_type::CALL_WITH_FDS {
        // The FD count precedes the arguments; the FDs themselves would follow the
        // packet out of band. Neither of our programs takes FDs.
        if payload.len() < 4 {
            return Route::Close("CALL_WITH_FDS without an FD count");
        }
        let nfds = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        if nfds > MAX_FDS {
            return Route::Close("too many FDs announced");
        }
        if nfds > 0 {
            return Route::Close("file descriptors are not accepted by this program");
        }
        payload = payload.slice(4..);
    }
    if h.prog == KEEPALIVE_PROGRAM && h.vers == KEEPALIVE_VERSION && h.msg_type == msg_type::MESSAGE
    {
        return if h.proc_ == KEEPALIVE_PING {
            Route::Ping
        } else {
            Route::Ignore
        };
    }
    let is_call = matches!(h.msg_type, msg_type::CALL | msg_type::CALL_WITH_FDS);
    if h.prog != program || h.vers != version {
        return if is_call {
            // libvirt prints both with `%d`: 0xFFFFFFFF is -1.
            Route::Reject(RemoteError::rpc(format!(
                "Cannot find program {} version {}",
                h.prog as i32, h.vers as i32
            )))
        } else {
            Route::Ignore
        };
    }
    if !is_call {
        return Route::Ignore;
    }
    if h.status != status::OK {
        // libvirt prints the status unsigned (`%u`): -1 is 4294967295.
        return Route::Reject(RemoteError::rpc(format!(
            "Unexpected message status {}",
            h.status as u32
        )));
    }
    Route::Call { payload }
}

/// The successful reply to a call whose procedure returns void.
pub fn void_reply(call: &Header) -> Frame {
    Frame {
        header: call.reply(status::OK),
        payload: Bytes::new(),
    }
}

/// A successful reply carrying an encoded return value.
pub fn data_reply(call: &Header, payload: Bytes) -> Frame {
    Frame {
        header: call.reply(status::OK),
        payload,
    }
}

/// The error reply to a call.
pub fn error_reply(call: &Header, err: &RemoteError) -> Frame {
    let mut payload = BytesMut::with_capacity(128 + err.message.len() * 2);
    err.encode(&mut payload);
    Frame {
        header: call.reply(status::ERROR),
        payload: payload.freeze(),
    }
}

/// The keepalive PONG: type MESSAGE, serial 0, empty payload.
pub fn pong() -> Frame {
    Frame {
        header: Header {
            prog: KEEPALIVE_PROGRAM,
            vers: KEEPALIVE_VERSION,
            proc_: KEEPALIVE_PONG,
            msg_type: msg_type::MESSAGE,
            serial: 0,
            status: status::OK,
        },
        payload: Bytes::new(),
    }
}

#[cfg(test)]
mod tests;
