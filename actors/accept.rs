//! The accept loop of one listener: it accepts while its server is below its
//! client limit, and otherwise leaves new clients waiting in the kernel
//! backlog (as libvirt does) until a client leaves or the limit is raised.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream};
use tokio::net::{UnixListener, UnixStream};
use tracing::{error, info, warn};

use super::gate::{ClientGate, Slot};
use super::supervisor::Server;

/// How long accepting pauses when the process is out of file descriptors.
const EMFILE_PAUSE: Duration = Duration::from_secs(5);

/// A connection that passed accept().
pub struct Accepted {
    pub server: Server,
    pub stream: UnixStream,
    pub slot: Slot,
}

/// Accepts on one listener while the server has room for a client.
pub fn accept_stream(
    server: Server,
    listener: Rc<UnixListener>,
    gate: Arc<ClientGate>,
) -> impl Stream<Item = Option<Accepted>> {
    stream::unfold((listener, gate), move |(listener, gate)| async move {
        if gate.full() {
            warn!(
                server = server.name(),
                max = gate.max(),
                "client limit reached; new connections wait in the backlog"
            );
            gate.room().await;
            info!(
                server = server.name(),
                "below the client limit again; accepting"
            );
        }
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = gate.lowered() => {
                    if gate.full() {
                        // Back to the top: wait for room before accepting again.
                        return Some((None, (listener, gate)));
                    }
                    continue;
                }
            };
            match accepted {
                Ok((stream, _)) => {
                    let item = Accepted {
                        server,
                        stream,
                        slot: gate.take(),
                    };
                    return Some((Some(item), (listener, gate)));
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    error!(server = server.name(), error = %e, "out of file descriptors; pausing accept");
                    actix_rt::time::sleep(EMFILE_PAUSE).await;
                }
                Err(e) => warn!(server = server.name(), error = %e, "accept failed"),
            }
        }
    })
}
