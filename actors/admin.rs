//! Connections on the admin socket: libvirt's admin program (what virt-admin
//! speaks, spec §10) and our lock-inspection program (what virtlockctl speaks).
//! Calls are answered one at a time, in order; keepalive works, and malformed
//! input closes the connection.

use std::rc::Rc;

use actix::prelude::*;
use bytes::Bytes;
use tracing::{debug, info};

use super::admin_state::{server_named, AdminState, SERVERS};
use super::clients::ClientRecord;
use super::inspect;
use super::rpc::{self, Answer, LinkInit, Peer, Quiesce, RpcActor, RpcLink};
use super::supervisor::{CloseClient, CloseOutcome, Server, SetTimeout, Shutdown};
use crate::admin_rules::{self as rules, ClientFound};
use crate::logging;
use crate::protocol::admin::{
    self, errors, reply, AdminCall, ClientRef, TypedParam, Value, TRANSPORT_UNIX,
};
use crate::protocol::error::{code, domain};
use crate::protocol::{Frame, FrameError, Header, RemoteError};

/// The libvirt version reported to `virt-admin version` ("Running against
/// daemon"): the release whose behaviour this daemon reproduces.
pub const LIBVIRT_VERSION: u64 = 9_000_000;

pub struct AdminConnection {
    link: RpcLink,
    state: Rc<AdminState>,
}

/// Everything an admin connection starts with.
pub struct AdminInit {
    pub link: LinkInit,
    pub state: Rc<AdminState>,
}

impl AdminConnection {
    pub fn launch(init: AdminInit) -> Addr<Self> {
        let state = init.state;
        RpcLink::launch(init.link, move |link| AdminConnection { link, state })
    }

    fn answer(&mut self, call: &Header, r: Answer, ctx: &mut Context<Self>) {
        self.link.answer(call, r, ctx);
    }

    /// Answers when `f` resolves, before the next call is read.
    fn answer_when<F>(&mut self, call: Header, f: F, ctx: &mut Context<Self>)
    where
        F: std::future::Future<Output = Answer> + 'static,
    {
        rpc::answer_when(self, call, f, ctx);
    }

    /// Closes once everything queued before has been written (libvirt's
    /// "delayed close").
    fn close_after_reply(ctx: &mut Context<Self>) {
        ctx.wait(fut::ready(()).map(|(), _, ctx: &mut Context<Self>| ctx.stop()));
    }

    fn dispatch(&mut self, call: Header, args: AdminCall, ctx: &mut Context<Self>) {
        use AdminCall as C;
        let st = self.state.clone();
        let r: Answer = match args {
            C::ConnectOpen { flags } => {
                errors::check_flags(flags, 0, "adminDispatchConnectOpen").map(|()| Bytes::new())
            }
            C::ConnectClose => {
                self.answer(&call, Ok(Bytes::new()), ctx);
                return Self::close_after_reply(ctx);
            }
            C::GetLibVersion => Ok(reply::lib_version(LIBVIRT_VERSION)),
            C::ListServers {
                need_results,
                flags,
            } => errors::check_flags(flags, 0, "adminConnectListServers").map(|()| {
                let names: Vec<&str> = SERVERS.iter().map(|s| s.name()).collect();
                let shown = if need_results == 0 { &[][..] } else { &names };
                reply::servers(shown, names.len() as u32)
            }),
            // libvirt 9.0 checks these flags against themselves: any are accepted.
            C::LookupServer { name, .. } => lookup(&name).map(|s| reply::server(s.name())),
            C::GetThreadpool { server, flags } => lookup(&server).and_then(|s| {
                errors::check_flags(flags, 0, "adminServerGetThreadPoolParameters")?;
                let prio = st.server(s).prio_workers.get();
                Ok(reply::params(&rules::threadpool_params(prio)))
            }),
            C::SetThreadpool {
                server,
                params,
                flags,
            } => lookup_admin(&server).and_then(|s| {
                if let Some(prio) = rules::set_threadpool(&params, flags)? {
                    st.server(s).prio_workers.set(prio);
                    st.server(s).journal(s);
                }
                Ok(Bytes::new())
            }),
            C::ListClients {
                server,
                need_results,
                flags,
            } => lookup(&server).and_then(|s| {
                errors::check_flags(flags, 0, "adminServerListClients")?;
                let all: Vec<ClientRef> = st
                    .clients
                    .of(s)
                    .into_iter()
                    .map(|(id, r)| client_ref(s, id, &r))
                    .collect();
                reply::listed_clients(&all, need_results != 0)
            }),
            C::LookupClient { server, id, flags } => lookup(&server).and_then(|s| {
                let r = st.clients.get(s, id).ok_or_else(|| errors::no_client(id))?;
                errors::check_flags(flags, 0, "adminServerLookupClient")?;
                Ok(reply::client(&client_ref(s, id, &r)))
            }),
            C::ClientInfo { client, flags } => match client_identity(&st, &client, flags) {
                // Names come from NSS (files, LDAP, sssd...), which may block:
                // looked up on the blocking pool, answered in call order.
                Ok(peer) => {
                    return self.answer_when(call, off_thread(move || client_info(peer)), ctx)
                }
                Err(e) => Err(e),
            },
            C::ClientClose { client, flags } => {
                return self.close_client(call, client, flags, ctx);
            }
            C::GetClientLimits { server, flags } => lookup(&server).and_then(|s| {
                errors::check_flags(flags, 0, "adminServerGetClientLimits")?;
                let limits = st.server(s).limits();
                let connected = st.clients.count(s);
                Ok(reply::params(&rules::client_limit_params(
                    limits, connected,
                )))
            }),
            C::SetClientLimits {
                server,
                params,
                flags,
            } => lookup_admin(&server).and_then(|s| {
                let settings = st.server(s);
                let limits = rules::set_client_limits(settings.limits(), &params, flags)?;
                let changed = settings.set_limits(limits);
                settings.journal(s);
                if changed {
                    info!(
                        server = s.name(),
                        max_clients = limits.max,
                        "client limit set by the admin API"
                    );
                }
                Ok(Bytes::new())
            }),
            C::GetLogOutputs { flags } => {
                errors::check_flags(flags, 0, "adminConnectGetLoggingOutputs").map(|()| {
                    let outputs = log_settings(&st).outputs;
                    reply::outputs(&logging::render_outputs(&outputs), outputs.len() as u32)
                })
            }
            C::GetLogFilters { flags } => {
                errors::check_flags(flags, 0, "adminConnectGetLoggingFilters").map(|()| {
                    let filters = log_settings(&st).filters;
                    let text = logging::render_filters(&filters);
                    let shown = (!filters.is_empty()).then_some(text.as_str());
                    reply::filters(shown, filters.len() as u32)
                })
            }
            C::SetLogOutputs { outputs, flags } => {
                match (
                    errors::check_flags(flags, 0, "adminConnectSetLoggingOutputs"),
                    &st.info.log,
                ) {
                    (Err(e), _) => Err(e),
                    (Ok(()), None) => Ok(Bytes::new()),
                    // Opening a file output (mkdir, open) may block on a network
                    // filesystem or a FIFO: done on the blocking pool.
                    (Ok(()), Some(log)) => {
                        let log = log.clone();
                        let set =
                            move || set_outputs(&log, outputs.as_deref()).map(|()| Bytes::new());
                        return self.answer_when(call, off_thread(set), ctx);
                    }
                }
            }
            C::SetLogFilters { filters, flags } => {
                errors::check_flags(flags, 0, "adminConnectSetLoggingFilters")
                    .and_then(|()| set_filters(&st, filters.as_deref()))
                    .map(|()| Bytes::new())
            }
            C::UpdateTls { server, flags } => lookup(&server).and_then(|_| {
                errors::check_flags(flags, 0, "adminServerUpdateTlsFiles")?;
                Err(RemoteError::new(
                    code::INTERNAL_ERROR,
                    domain::RPC,
                    "no tls service found, unable to update tls files",
                ))
            }),
            C::SetDaemonTimeout { timeout, flags } => {
                errors::check_flags(flags, 0, "adminConnectSetDaemonTimeout").map(|()| {
                    self.link.supervisor().do_send(SetTimeout(timeout));
                    Bytes::new()
                })
            }
            C::DaemonShutdown { flags } => errors::check_flags(
                flags,
                admin::DAEMON_SHUTDOWN_PRESERVE,
                "adminConnectDaemonShutdown",
            )
            .map(|()| {
                info!(
                    admin_client = self.link.id(),
                    "shutdown requested over the admin socket"
                );
                self.link.supervisor().do_send(Shutdown);
                Bytes::new()
            }),
        };
        self.answer(&call, r, ctx);
    }

    fn close_client(
        &mut self,
        call: Header,
        client: ClientRef,
        flags: u32,
        ctx: &mut Context<Self>,
    ) {
        let Some(server) = server_named(&client.server) else {
            return self.answer(&call, Err(errors::no_server(&client.server)), ctx);
        };
        if self.state.clients.get(server, client.id).is_none() {
            return self.answer(&call, Err(errors::no_client(client.id)), ctx);
        }
        if let Err(e) = errors::check_flags(flags, 0, "adminClientClose") {
            return self.answer(&call, Err(e), ctx);
        }
        info!(
            admin_client = self.link.id(),
            server = server.name(),
            client = client.id,
            "client disconnected by the admin API"
        );
        if server == Server::Admin && client.id == self.link.id() {
            // libvirt closes the caller's own connection without answering: the
            // caller reads EOF (replies to its earlier calls are still written).
            return Self::close_after_reply(ctx);
        }
        let op = self.link.supervisor().send(CloseClient {
            server,
            id: client.id,
        });
        self.answer_when(
            call,
            async move {
                match op.await {
                    Ok(CloseOutcome::Closed) => Ok(Bytes::new()),
                    Ok(CloseOutcome::NoSuchClient) => Err(errors::no_client(client.id)),
                    Ok(CloseOutcome::Upgrading) => Err(RemoteError::new(
                        code::OPERATION_INVALID,
                        domain::ADMIN,
                        "a live upgrade is in progress; try again",
                    )),
                    Err(e) => Err(RemoteError::new(
                        code::INTERNAL_ERROR,
                        domain::ADMIN,
                        format!("daemon unavailable: {e}"),
                    )),
                }
            },
            ctx,
        );
    }

    fn handle_inspect(&mut self, call: Header, payload: Bytes, ctx: &mut Context<Self>) {
        use crate::protocol::inspect::procedure as p;
        let st = self.state.clone();
        match call.proc_ {
            p::LIST_LOCKS => {
                let lockspaces = st.lockspaces.clone();
                self.answer_when(
                    call,
                    async move {
                        let leases = inspect::leases(&lockspaces).await;
                        crate::protocol::inspect::leases_reply(&leases).map_err(too_large)
                    },
                    ctx,
                );
            }
            p::LIST_CLIENTS => {
                let lockspaces = st.lockspaces.clone();
                let clients = inspect::client_rows(&st);
                self.answer_when(
                    call,
                    async move {
                        let leases = inspect::leases(&lockspaces).await;
                        let rows = inspect::clients(clients, &leases);
                        crate::protocol::inspect::clients_reply(&rows).map_err(too_large)
                    },
                    ctx,
                );
            }
            p::STATUS => {
                let status = inspect::status(&st);
                self.answer(&call, Ok(status.encode()), ctx);
            }
            p::RELEASE_UNKNOWN => {
                let path = match crate::protocol::inspect::decode_release_unknown(&payload) {
                    Ok(p) => p,
                    Err(e) => {
                        let e = RemoteError::rpc(format!("Unable to decode message payload: {e}"));
                        return self.answer(&call, Err(e), ctx);
                    }
                };
                let default = st.lockspaces.get(b"");
                self.answer_when(
                    call,
                    async move { inspect::release_unknown(default, path).await },
                    ctx,
                );
            }
            other => {
                let e = RemoteError::rpc(format!("unknown procedure: {other}"));
                self.answer(&call, Err(e), ctx);
            }
        }
    }
}

impl RpcActor for AdminConnection {
    fn link(&mut self) -> &mut RpcLink {
        &mut self.link
    }

    /// Our inspection program shares the socket with libvirt's admin program.
    fn program(header: &Header) -> (u32, u32) {
        if header.prog == crate::protocol::inspect::PROGRAM {
            (
                crate::protocol::inspect::PROGRAM,
                crate::protocol::inspect::VERSION,
            )
        } else {
            (admin::PROGRAM, admin::VERSION)
        }
    }

    fn call(&mut self, header: Header, payload: Bytes, ctx: &mut Context<Self>) {
        if header.prog == crate::protocol::inspect::PROGRAM {
            return self.handle_inspect(header, payload, ctx);
        }
        match AdminCall::decode(header.proc_, &payload) {
            Ok(Some(args)) => self.dispatch(header, args, ctx),
            Ok(None) => {
                let e = RemoteError::rpc(format!("unknown procedure: {}", header.proc_));
                self.answer(&header, Err(e), ctx);
            }
            Err(e) => {
                debug!(admin_client = self.link.id(), error = %e, "undecodable payload");
                let e = RemoteError::rpc("Unable to decode message payload");
                self.answer(&header, Err(e), ctx);
            }
        }
    }
}

/// `virNetDaemonGetServer`.
fn lookup(name: &str) -> Result<Server, RemoteError> {
    server_named(name).ok_or_else(|| errors::no_server(name))
}

/// The same, with the text of the hand-written dispatchers.
fn lookup_admin(name: &str) -> Result<Server, RemoteError> {
    server_named(name).ok_or_else(|| errors::no_server_admin(name))
}

fn client_ref(server: Server, id: u64, r: &ClientRecord) -> ClientRef {
    ClientRef {
        server: server.name().to_owned(),
        id,
        timestamp: r.conn_time,
        transport: TRANSPORT_UNIX,
    }
}

/// CLIENT_GET_INFO's checks: the peer whose identity is to be reported.
fn client_identity(st: &AdminState, client: &ClientRef, flags: u32) -> Result<Peer, RemoteError> {
    let record = server_named(&client.server).map(|s| st.clients.get(s, client.id));
    let found = match &record {
        None => ClientFound::NoServer,
        Some(None) => ClientFound::NoClient,
        Some(Some(r)) => ClientFound::Client { called: r.called },
    };
    rules::check_client_info(&client.server, client.id, found, flags)?;
    record
        .flatten()
        .map(|r| r.peer)
        .ok_or_else(|| errors::no_client_admin(client.id))
}

/// CLIENT_GET_INFO's reply. Resolves user and group names through NSS, which
/// may block: call it off the event thread.
fn client_info(peer: Peer) -> Answer {
    let user = nix::unistd::User::from_uid(peer.uid.into())
        .ok()
        .flatten()
        .map_or_else(|| peer.uid.to_string(), |u| u.name);
    let group = nix::unistd::Group::from_gid(peer.gid.into())
        .ok()
        .flatten()
        .map_or_else(|| peer.gid.to_string(), |g| g.name);
    Ok(reply::params(&[
        TypedParam::new("readonly", Value::Boolean(false)),
        TypedParam::new("unix_user_id", Value::Int(peer.uid as i32)),
        TypedParam::new("unix_user_name", Value::String(user)),
        TypedParam::new("unix_group_id", Value::Int(peer.gid as i32)),
        TypedParam::new("unix_group_name", Value::String(group)),
        TypedParam::new("unix_process_id", Value::Int(peer.pid)),
    ]))
}

/// Runs `f` on the blocking pool, so that a hung NSS server or file system
/// stalls only the admin connection that asked, not the event thread every
/// lock client is served on.
async fn off_thread(f: impl FnOnce() -> Answer + Send + 'static) -> Answer {
    actix_rt::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(RemoteError::new(
            code::INTERNAL_ERROR,
            domain::ADMIN,
            format!("admin task failed: {e}"),
        ))
    })
}

/// An inspection reply too large to send: the call fails with a plain error.
fn too_large(e: crate::protocol::inspect::TooLarge) -> RemoteError {
    RemoteError::rpc(e.to_string())
}

/// The logging settings in effect (none where no logging was installed).
fn log_settings(st: &AdminState) -> logging::LogSettings {
    st.info
        .log
        .as_ref()
        .map(logging::LogHandle::settings)
        .unwrap_or_default()
}

/// `virLogSetOutputs`.
fn set_outputs(log: &logging::LogHandle, outputs: Option<&str>) -> Result<(), RemoteError> {
    log.set_outputs(rules::log_outputs(outputs)?)
        .map_err(rules::log_error)?;
    info!(outputs = ?outputs, "log outputs set by the admin API");
    Ok(())
}

/// `virLogSetFilters`.
fn set_filters(st: &AdminState, filters: Option<&str>) -> Result<(), RemoteError> {
    let Some(log) = &st.info.log else {
        return Ok(());
    };
    log.set_filters(rules::log_filters(filters)?);
    info!(filters = ?filters, "log filters set by the admin API");
    Ok(())
}

impl Actor for AdminConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        rpc::replay_pending(self, ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        rpc::stopped(&self.link);
    }
}

impl StreamHandler<Result<Frame, FrameError>> for AdminConnection {
    fn handle(&mut self, item: Result<Frame, FrameError>, ctx: &mut Self::Context) {
        rpc::incoming(self, item, ctx);
    }
}

/// Close this admin connection (admin client-disconnect).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAdmin;

impl Handler<CloseAdmin> for AdminConnection {
    type Result = ();
    fn handle(&mut self, _: CloseAdmin, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Quiesce> for AdminConnection {
    type Result = MessageResult<Quiesce>;
    fn handle(&mut self, m: Quiesce, ctx: &mut Self::Context) -> Self::Result {
        m.hold(self.link.state(None), ctx)
    }
}
