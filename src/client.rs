//! An async client for the lock protocol, used by the tests, examples, benches and
//! tools. Speaks exactly what libvirt's lockd plugin sends: one call at a time,
//! serials from 0.

use std::path::Path;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::protocol::lock::{self, LockCall, Owner};
use crate::protocol::{msg_type, status, Frame, FrameCodec, FrameError, Header, RemoteError};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{0}")]
    Remote(RemoteError),
    #[error("connection: {0}")]
    Frame(#[from] FrameError),
    #[error("connection closed by the daemon")]
    Closed,
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Frame(FrameError::Io(e))
    }
}

impl ClientError {
    /// The daemon's error, if the call was answered with one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Self::Remote(e) => Some(e),
            _ => None,
        }
    }
}

/// How long [`Client::connect`] waits for room in a full listen backlog.
pub const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// One connection to a lock daemon.
pub struct Client {
    io: Framed<UnixStream, FrameCodec>,
    serial: u32,
}

impl Client {
    /// Connects like libvirt's blocking `connect()`: while the daemon's listen
    /// backlog is full (EAGAIN on a non-blocking socket), keep trying for up to
    /// [`CONNECT_PATIENCE`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        loop {
            match UnixStream::connect(path.as_ref()).await {
                Ok(s) => return Ok(Self::from_stream(s)),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn from_stream(stream: UnixStream) -> Self {
        Self {
            io: Framed::new(stream, FrameCodec),
            serial: 0,
        }
    }

    /// Sends one lock-program call and waits for its reply.
    pub async fn call(&mut self, call: &LockCall) -> Result<(), ClientError> {
        let frame = call_frame(call, self.serial);
        let header = frame.header;
        self.serial = self.serial.wrapping_add(1);
        self.send_frame(frame).await?;
        let reply = self.recv_frame().await?.ok_or(ClientError::Closed)?;
        check_reply(&header, &reply)
    }

    /// Calls procedure `proc_` of any program and returns the reply's payload
    /// (admin and inspection programs; the reply is checked like [`Client::call`]).
    pub async fn call_program(
        &mut self,
        prog: u32,
        vers: u32,
        proc_: i32,
        payload: bytes::Bytes,
    ) -> Result<bytes::Bytes, ClientError> {
        let header = Header {
            prog,
            vers,
            proc_,
            msg_type: msg_type::CALL,
            serial: self.serial,
            status: status::OK,
        };
        self.serial = self.serial.wrapping_add(1);
        self.send_frame(Frame { header, payload }).await?;
        let reply = self.recv_frame().await?.ok_or(ClientError::Closed)?;
        check_reply(&header, &reply)?;
        Ok(reply.payload)
    }

    /// Sends a frame as is.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.io.send(frame).await?;
        Ok(())
    }

    /// Writes raw bytes (for malformed-input tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        use tokio::io::AsyncWriteExt;
        self.io.get_mut().write_all(bytes).await?;
        Ok(())
    }

    /// The next frame from the daemon; `None` when it closed the connection.
    pub async fn recv_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        self.io.next().await.transpose().map_err(ClientError::from)
    }

    pub async fn register(&mut self, owner: &Owner) -> Result<(), ClientError> {
        self.call(&LockCall::Register {
            owner: owner.clone(),
            flags: 0,
        })
        .await
    }

    pub async fn restrict(&mut self) -> Result<(), ClientError> {
        self.call(&LockCall::Restrict { flags: 0 }).await
    }

    pub async fn create_lockspace(&mut self, path: &[u8]) -> Result<(), ClientError> {
        self.call(&LockCall::CreateLockspace {
            path: path.to_vec().into(),
        })
        .await
    }

    pub async fn new_lockspace(&mut self, path: &[u8]) -> Result<(), ClientError> {
        self.call(&LockCall::New {
            path: path.to_vec().into(),
            flags: 0,
        })
        .await
    }

    pub async fn create_resource(&mut self, path: &[u8], name: &[u8]) -> Result<(), ClientError> {
        self.call(&LockCall::CreateResource {
            path: path.to_vec().into(),
            name: name.to_vec().into(),
            flags: 0,
        })
        .await
    }

    pub async fn delete_resource(&mut self, path: &[u8], name: &[u8]) -> Result<(), ClientError> {
        self.call(&LockCall::DeleteResource {
            path: path.to_vec().into(),
            name: name.to_vec().into(),
            flags: 0,
        })
        .await
    }

    /// ACQUIRE with `lock::ACQUIRE_SHARED` / `lock::ACQUIRE_AUTOCREATE` flags.
    pub async fn acquire(
        &mut self,
        path: &[u8],
        name: &[u8],
        flags: u32,
    ) -> Result<(), ClientError> {
        self.call(&LockCall::Acquire {
            path: path.to_vec().into(),
            name: name.to_vec().into(),
            flags,
        })
        .await
    }

    pub async fn release(&mut self, path: &[u8], name: &[u8]) -> Result<(), ClientError> {
        self.call(&LockCall::Release {
            path: path.to_vec().into(),
            name: name.to_vec().into(),
            flags: 0,
        })
        .await
    }

    /// Sends a keepalive PING and waits for the PONG.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        let ping = Frame {
            header: Header {
                prog: crate::protocol::KEEPALIVE_PROGRAM,
                vers: crate::protocol::KEEPALIVE_VERSION,
                proc_: crate::protocol::KEEPALIVE_PING,
                msg_type: msg_type::MESSAGE,
                serial: 0,
                status: status::OK,
            },
            payload: bytes::Bytes::new(),
        };
        self.send_frame(ping).await?;
        match self.recv_frame().await? {
            Some(f) if f == crate::protocol::pong() => Ok(()),
            Some(f) => Err(ClientError::Protocol(format!(
                "expected PONG, got {:?}",
                f.header
            ))),
            None => Err(ClientError::Closed),
        }
    }
}

/// The CALL packet of a lock-program call with this serial.
pub fn call_frame(call: &LockCall, serial: u32) -> Frame {
    let mut payload = BytesMut::new();
    call.encode(&mut payload);
    Frame {
        header: Header {
            prog: lock::PROGRAM,
            vers: lock::VERSION,
            proc_: call.procedure() as i32,
            msg_type: msg_type::CALL,
            serial,
            status: status::OK,
        },
        payload: payload.freeze(),
    }
}

/// Checks that `reply` answers `call` the way libvirt's client does, and turns an
/// error reply into [`ClientError::Remote`].
pub fn check_reply(call: &Header, reply: &Frame) -> Result<(), ClientError> {
    let h = &reply.header;
    if h.prog != call.prog
        || h.vers != call.vers
        || h.proc_ != call.proc_
        || h.serial != call.serial
        || h.msg_type != msg_type::REPLY
    {
        return Err(ClientError::Protocol(format!(
            "{h:?} does not answer {call:?}"
        )));
    }
    match h.status {
        status::OK => Ok(()),
        status::ERROR => Err(ClientError::Remote(
            RemoteError::decode(&reply.payload)
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
        )),
        s => Err(ClientError::Protocol(format!("reply status {s}"))),
    }
}

/// An owner as libvirt's lockd plugin registers it.
pub fn owner(name: &str, id: u32, pid: u32) -> Owner {
    let mut uuid = [0u8; 16];
    uuid[12..].copy_from_slice(&pid.to_be_bytes());
    uuid[..4].copy_from_slice(&id.to_be_bytes());
    Owner {
        uuid,
        name: name.as_bytes().to_vec(),
        id,
        pid,
    }
}
