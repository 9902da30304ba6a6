//! What `virtlockctl` does with the bytes the admin socket sends back: cut the
//! reply packet, check it answers the call (`client::check_reply`, which
//! decodes an error reply's `remote_error`), decode the inspection reply and
//! render it as table and JSON. Input: one byte choosing the command (locks,
//! who, clients, status), then the reply stream.
//!
//! Asserts: no panic anywhere on that path, whatever a daemon (or anything
//! bound to the socket) sends; an error reply's `remote_error` round-trips
//! through its encoder; a reply that does not answer the call is an error.

#![no_main]

use std::path::Path;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use virtlockd::client::{check_reply, ClientError};
use virtlockd::ctl::{render, who};
use virtlockd::protocol::inspect::{self, procedure, StatusView};
use virtlockd::protocol::{msg_type, status, FrameCodec, Header, RemoteError};

/// virtlockctl prints JSON pretty (`{:#}` is serde_json's pretty printer).
fn show(v: impl std::fmt::Display) {
    let _ = format!("{v:#}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let proc_ = match selector % 4 {
        0 | 1 => procedure::LIST_LOCKS,
        2 => procedure::LIST_CLIENTS,
        _ => procedure::STATUS,
    };
    // virtlockctl's one call on a fresh connection: serial 0.
    let call = Header {
        prog: inspect::PROGRAM,
        vers: inspect::VERSION,
        proc_,
        msg_type: msg_type::CALL,
        serial: 0,
        status: status::OK,
    };
    let mut buf = BytesMut::from(stream);
    let Ok(Some(reply)) = FrameCodec.decode(&mut buf) else {
        return;
    };
    let answers = reply.header == call.reply(reply.header.status);
    let payload = match check_reply(&call, &reply) {
        Ok(()) => {
            assert!(answers && reply.header.status == status::OK);
            reply.payload
        }
        Err(ClientError::Remote(e)) => {
            assert!(answers && reply.header.status == status::ERROR);
            let mut encoded = BytesMut::new();
            e.encode(&mut encoded);
            assert_eq!(
                RemoteError::decode(&encoded).expect("re-encoded error decodes"),
                e
            );
            let _ = e.to_string();
            return;
        }
        Err(e) => {
            assert!(!answers || reply.header.status != status::OK, "{e}");
            return;
        }
    };
    match (selector % 4, proc_) {
        (0, _) => {
            if let Ok(leases) = inspect::decode_leases(&payload) {
                show(render::leases_json(&leases));
                let _ = render::leases_table(&leases);
            }
        }
        (1, _) => {
            if let Ok(leases) = inspect::decode_leases(&payload) {
                // `who` on a path named by the first lease, so that some match.
                let named = leases
                    .first()
                    .map(|l| String::from_utf8_lossy(&l.name).into_owned())
                    .unwrap_or_default();
                let path = Path::new(&named);
                let mine = who::leases_of(path, &leases);
                show(render::who_json(&named, &mine));
                let _ = render::who_text(&named, &mine);
            }
        }
        (_, procedure::LIST_CLIENTS) => {
            if let Ok(clients) = inspect::decode_clients(&payload) {
                show(render::clients_json(&clients));
                let _ = render::clients_table(&clients);
            }
        }
        _ => {
            if let Ok(s) = StatusView::decode(&payload) {
                show(render::status_json(&s));
                let _ = render::status_text(&s);
            }
        }
    }
});
