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
use super::supervisor::{CloseClient, Server, SetTimeout, Shutdown};
use crate::logging;
use crate::protocol::admin::{
    self, errors, reply, AdminCall, ClientRef, TypedParam, Value, TRANSPORT_UNIX,
};
use crate::protocol::error::{code, domain};
use crate::protocol::typed_params::{check_field_lengths, get_uint, validate};
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
                Ok(reply::params(&threadpool(&st, s)))
            }),
            C::SetThreadpool {
                server,
                params,
                flags,
            } => server_named(&server)
                .ok_or_else(|| errors::no_server_admin(&server))
                .and_then(|s| {
                    check_field_lengths(&params)?;
                    set_threadpool(&st, s, &params, flags)
                })
                .map(|()| Bytes::new()),
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
                Ok(reply::params(&client_limits(&st, s)))
            }),
            C::SetClientLimits {
                server,
                params,
                flags,
            } => server_named(&server)
                .ok_or_else(|| errors::no_server_admin(&server))
                .and_then(|s| {
                    check_field_lengths(&params)?;
                    self.set_client_limits(s, &params, flags)
                })
                .map(|()| Bytes::new()),
            C::GetLogOutputs { flags } => {
                errors::check_flags(flags, 0, "adminConnectGetLoggingOutputs").map(|()| {
                    let outputs = st
                        .info
                        .log
                        .as_ref()
                        .map(|l| l.settings().outputs)
                        .unwrap_or_default();
                    reply::outputs(&logging::render_outputs(&outputs), outputs.len() as u32)
                })
            }
            C::GetLogFilters { flags } => {
                errors::check_flags(flags, 0, "adminConnectGetLoggingFilters").map(|()| {
                    let filters = st
                        .info
                        .log
                        .as_ref()
                        .map(|l| l.settings().filters)
                        .unwrap_or_default();
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
                    Ok(true) => Ok(Bytes::new()),
                    Ok(false) => Err(errors::no_client(client.id)),
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

    fn set_client_limits(
        &self,
        server: Server,
        params: &[TypedParam],
        flags: u32,
    ) -> Result<(), RemoteError> {
        errors::check_flags(flags, 0, "adminServerSetClientLimits")?;
        validate(
            params,
            &[("nclients_max", "uint"), ("nclients_unauth_max", "uint")],
        )?;
        let s = self.state.server(server);
        let max = get_uint(params, "nclients_max").map_or(s.gate.max(), |v| v as usize);
        let unauth =
            get_uint(params, "nclients_unauth_max").map_or(s.unauth_max.get(), |v| v as usize);
        if max < unauth {
            return Err(errors::invalid_arg(
                domain::RPC,
                "The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients",
            ));
        }
        s.unauth_max.set(unauth);
        if s.gate.max() != max {
            // Raising it lets clients waiting in the backlog in at once.
            s.gate.set_max(max);
            info!(
                server = server.name(),
                max_clients = max,
                "client limit set by the admin API"
            );
        }
        Ok(())
    }

    fn handle_inspect(&mut self, call: Header, ctx: &mut Context<Self>) {
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
            return self.handle_inspect(header, ctx);
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

fn client_ref(server: Server, id: u64, r: &ClientRecord) -> ClientRef {
    ClientRef {
        server: server.name().to_owned(),
        id,
        timestamp: r.conn_time,
        transport: TRANSPORT_UNIX,
    }
}

/// Our "thread pool" as libvirt's API describes one. Like libvirt's virtlockd,
/// the daemon has no worker pool: every call is handled on the event loop
/// (lockspaces on filesystems that may hang have a thread each, which is not a
/// pool of workers). So all counts are 0, except the priority workers last set.
fn threadpool(st: &AdminState, server: Server) -> Vec<TypedParam> {
    let prio = st.server(server).prio_workers.get();
    [
        ("minWorkers", 0),
        ("maxWorkers", 0),
        ("nWorkers", 0),
        ("freeWorkers", 0),
        ("prioWorkers", prio),
        ("jobQueueDepth", 0),
    ]
    .into_iter()
    .map(|(f, v)| TypedParam::new(f, Value::UInt(v)))
    .collect()
}

/// `virThreadPoolSetParameters` on a pool with `maxWorkers` 0.
fn set_threadpool(
    st: &AdminState,
    server: Server,
    params: &[TypedParam],
    flags: u32,
) -> Result<(), RemoteError> {
    errors::check_flags(flags, 0, "adminServerSetThreadPoolParameters")?;
    validate(
        params,
        &[
            ("minWorkers", "uint"),
            ("maxWorkers", "uint"),
            ("prioWorkers", "uint"),
        ],
    )?;
    let min = get_uint(params, "minWorkers");
    let max = get_uint(params, "maxWorkers");
    if min.is_some_and(|m| m > max.unwrap_or(0)) {
        return Err(errors::invalid_arg(
            domain::NONE,
            "minWorkers cannot be larger than maxWorkers",
        ));
    }
    if max.is_some_and(|m| m > 0) {
        return Err(errors::invalid_arg(
            domain::NONE,
            "maxWorkers must not be switched from zero to non-zero and vice versa",
        ));
    }
    if let Some(p) = get_uint(params, "prioWorkers") {
        st.server(server).prio_workers.set(p);
    }
    Ok(())
}

fn client_limits(st: &AdminState, server: Server) -> Vec<TypedParam> {
    let s = st.server(server);
    [
        ("nclients_max", s.gate.max()),
        ("nclients", st.clients.count(server)),
        ("nclients_unauth_max", s.unauth_max.get()),
        ("nclients_unauth", 0),
    ]
    .into_iter()
    .map(|(f, v)| TypedParam::new(f, Value::UInt(v as u32)))
    .collect()
}

/// CLIENT_GET_INFO's checks, with its dispatcher's own texts for unknown
/// names: the peer whose identity is to be reported.
fn client_identity(st: &AdminState, client: &ClientRef, flags: u32) -> Result<Peer, RemoteError> {
    let server =
        server_named(&client.server).ok_or_else(|| errors::no_server_admin(&client.server))?;
    let r = st
        .clients
        .get(server, client.id)
        .ok_or_else(|| errors::no_client_admin(client.id))?;
    errors::check_flags(flags, 0, "adminClientGetInfo")?;
    if !r.called {
        return Err(RemoteError::new(
            code::INTERNAL_ERROR,
            domain::RPC,
            "No identity information available for client",
        ));
    }
    Ok(r.peer)
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

fn log_error(e: logging::LogError) -> RemoteError {
    let c = if e.is_invalid_argument() {
        code::INVALID_ARG
    } else {
        code::INTERNAL_ERROR
    };
    RemoteError::new(c, domain::NONE, e.to_string())
}

/// `virLogSetOutputs`: absent or empty selects the default outputs.
fn set_outputs(log: &logging::LogHandle, outputs: Option<&str>) -> Result<(), RemoteError> {
    let parsed = match outputs {
        Some(s) if !s.trim().is_empty() => logging::parse_outputs(s).map_err(log_error)?,
        _ => Vec::new(),
    };
    log.set_outputs(parsed).map_err(log_error)?;
    info!(outputs = ?outputs, "log outputs set by the admin API");
    Ok(())
}

/// `virLogSetFilters`: absent or empty removes every filter.
fn set_filters(st: &AdminState, filters: Option<&str>) -> Result<(), RemoteError> {
    let Some(log) = &st.info.log else {
        return Ok(());
    };
    let parsed = match filters {
        Some(s) => logging::parse_filters(s).map_err(log_error)?,
        None => Vec::new(),
    };
    log.set_filters(parsed);
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
