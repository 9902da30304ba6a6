//! The admin program (0x06900690 v1) that virt-admin speaks on the admin socket
//! (spec §10): its procedures, their arguments and return values, and libvirt's
//! typed parameters. Pure: decoding and encoding only.

use bytes::{Bytes, BytesMut};

use super::xdr::{XdrError, XdrReader, XdrWrite};

pub const PROGRAM: u32 = 0x0690_0690;
pub const VERSION: u32 = 1;

/// `nonnull_string` = `string<4194304>` (`ADMIN_STRING_MAX`).
pub const STRING_MAX: usize = 4_194_304;
/// Array limits of `admin_protocol.x`.
pub const SERVER_LIST_MAX: usize = 16384;
pub const CLIENT_LIST_MAX: usize = 16384;
pub const THREADPOOL_PARAMETERS_MAX: usize = 32;
pub const CLIENT_INFO_PARAMETERS_MAX: usize = 64;
pub const CLIENT_LIMITS_MAX: usize = 32;

/// `VIR_DAEMON_SHUTDOWN_PRESERVE` (procedure 20, libvirt 11.2+).
pub const DAEMON_SHUTDOWN_PRESERVE: u32 = 1;

/// Procedure numbers.
pub mod procedure {
    pub const CONNECT_OPEN: i32 = 1;
    pub const CONNECT_CLOSE: i32 = 2;
    pub const CONNECT_GET_LIB_VERSION: i32 = 3;
    pub const CONNECT_LIST_SERVERS: i32 = 4;
    pub const CONNECT_LOOKUP_SERVER: i32 = 5;
    pub const SERVER_GET_THREADPOOL_PARAMETERS: i32 = 6;
    pub const SERVER_SET_THREADPOOL_PARAMETERS: i32 = 7;
    pub const SERVER_LIST_CLIENTS: i32 = 8;
    pub const SERVER_LOOKUP_CLIENT: i32 = 9;
    pub const CLIENT_GET_INFO: i32 = 10;
    pub const CLIENT_CLOSE: i32 = 11;
    pub const SERVER_GET_CLIENT_LIMITS: i32 = 12;
    pub const SERVER_SET_CLIENT_LIMITS: i32 = 13;
    pub const CONNECT_GET_LOGGING_OUTPUTS: i32 = 14;
    pub const CONNECT_GET_LOGGING_FILTERS: i32 = 15;
    pub const CONNECT_SET_LOGGING_OUTPUTS: i32 = 16;
    pub const CONNECT_SET_LOGGING_FILTERS: i32 = 17;
    pub const SERVER_UPDATE_TLS_FILES: i32 = 18;
    pub const CONNECT_SET_DAEMON_TIMEOUT: i32 = 19;
    pub const CONNECT_DAEMON_SHUTDOWN: i32 = 20;
}

/// `virTypedParameterType` numbers.
pub mod param_type {
    pub const INT: i32 = 1;
    pub const UINT: i32 = 2;
    pub const LLONG: i32 = 3;
    pub const ULLONG: i32 = 4;
    pub const DOUBLE: i32 = 5;
    pub const BOOLEAN: i32 = 6;
    pub const STRING: i32 = 7;
}

/// The value of a typed parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i32),
    UInt(u32),
    LLong(i64),
    ULLong(u64),
    Double(f64),
    Boolean(bool),
    String(String),
}

impl Value {
    /// libvirt's name of the type (`virTypedParameterTypeToString`), as error
    /// texts show it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::LLong(_) => "llong",
            Value::ULLong(_) => "ullong",
            Value::Double(_) => "double",
            Value::Boolean(_) => "boolean",
            Value::String(_) => "string",
        }
    }
}

/// `admin_typed_param`: a named value.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedParam {
    pub field: String,
    pub value: Value,
}

impl TypedParam {
    pub fn new(field: &str, value: Value) -> Self {
        Self {
            field: field.to_owned(),
            value,
        }
    }

    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        let field = text(r.c_string(STRING_MAX)?);
        let value = match r.i32()? {
            param_type::INT => Value::Int(r.i32()?),
            param_type::UINT => Value::UInt(r.u32()?),
            param_type::LLONG => Value::LLong(r.i64()?),
            param_type::ULLONG => Value::ULLong(r.u64()?),
            param_type::DOUBLE => Value::Double(f64::from_bits(r.u64()?)),
            param_type::BOOLEAN => Value::Boolean(r.i32()? != 0),
            param_type::STRING => Value::String(text(r.c_string(STRING_MAX)?)),
            // An unknown union arm fails XDR decoding, as in libvirt.
            other => return Err(XdrError::BadDiscriminant(other as u32)),
        };
        Ok(Self { field, value })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_xdr_string(self.field.as_bytes());
        match &self.value {
            Value::Int(v) => {
                out.put_xdr_i32(param_type::INT);
                out.put_xdr_i32(*v);
            }
            Value::UInt(v) => {
                out.put_xdr_i32(param_type::UINT);
                out.put_xdr_u32(*v);
            }
            Value::LLong(v) => {
                out.put_xdr_i32(param_type::LLONG);
                out.put_xdr_u64(*v as u64);
            }
            Value::ULLong(v) => {
                out.put_xdr_i32(param_type::ULLONG);
                out.put_xdr_u64(*v);
            }
            Value::Double(v) => {
                out.put_xdr_i32(param_type::DOUBLE);
                out.put_xdr_u64(v.to_bits());
            }
            Value::Boolean(v) => {
                out.put_xdr_i32(param_type::BOOLEAN);
                out.put_xdr_i32(i32::from(*v));
            }
            Value::String(s) => {
                out.put_xdr_i32(param_type::STRING);
                out.put_xdr_string(s.as_bytes());
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A variable-length array's element count, checked against its limit before
/// anything is allocated (XDR decoding fails beyond it, as in libvirt).
fn array_len(r: &mut XdrReader<'_>, max: usize) -> Result<usize, XdrError> {
    let n = r.u32()? as usize;
    if n > max {
        return Err(XdrError::TooLong { len: n, max });
    }
    Ok(n)
}

fn params(r: &mut XdrReader<'_>, max: usize) -> Result<Vec<TypedParam>, XdrError> {
    let n = array_len(r, max)?;
    (0..n).map(|_| TypedParam::decode(r)).collect()
}

fn opt_string(r: &mut XdrReader<'_>) -> Result<Option<String>, XdrError> {
    Ok(if r.optional()? {
        Some(text(r.c_string(STRING_MAX)?))
    } else {
        None
    })
}

/// `admin_nonnull_client` as a call names it; only the server name and the id
/// are used by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRef {
    pub server: String,
    pub id: u64,
    /// Connect time, seconds since the epoch.
    pub timestamp: i64,
    /// 0 = UNIX (always, here).
    pub transport: u32,
}

/// `VIR_CLIENT_TRANS_UNIX`.
pub const TRANSPORT_UNIX: u32 = 0;

impl ClientRef {
    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Self {
            server: text(r.c_string(STRING_MAX)?),
            id: r.u64()?,
            timestamp: r.i64()?,
            transport: r.u32()?,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_xdr_string(self.server.as_bytes());
        out.put_xdr_u64(self.id);
        out.put_xdr_u64(self.timestamp as u64);
        out.put_xdr_u32(self.transport);
    }
}

/// A decoded call of the admin program.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCall {
    ConnectOpen {
        flags: u32,
    },
    ConnectClose,
    GetLibVersion,
    ListServers {
        need_results: u32,
        flags: u32,
    },
    LookupServer {
        name: String,
        flags: u32,
    },
    GetThreadpool {
        server: String,
        flags: u32,
    },
    SetThreadpool {
        server: String,
        params: Vec<TypedParam>,
        flags: u32,
    },
    ListClients {
        server: String,
        need_results: u32,
        flags: u32,
    },
    LookupClient {
        server: String,
        id: u64,
        flags: u32,
    },
    ClientInfo {
        client: ClientRef,
        flags: u32,
    },
    ClientClose {
        client: ClientRef,
        flags: u32,
    },
    GetClientLimits {
        server: String,
        flags: u32,
    },
    SetClientLimits {
        server: String,
        params: Vec<TypedParam>,
        flags: u32,
    },
    GetLogOutputs {
        flags: u32,
    },
    GetLogFilters {
        flags: u32,
    },
    SetLogOutputs {
        outputs: Option<String>,
        flags: u32,
    },
    SetLogFilters {
        filters: Option<String>,
        flags: u32,
    },
    UpdateTls {
        server: String,
        flags: u32,
    },
    SetDaemonTimeout {
        timeout: u32,
        flags: u32,
    },
    DaemonShutdown {
        flags: u32,
    },
}

impl AdminCall {
    /// Decodes the arguments of procedure `proc_`; `Ok(None)` for a procedure
    /// this program does not have.
    pub fn decode(proc_: i32, payload: &[u8]) -> Result<Option<Self>, XdrError> {
        use procedure as p;
        let r = &mut XdrReader::new(payload);
        let server = |r: &mut XdrReader<'_>| r.c_string(STRING_MAX).map(text);
        Ok(Some(match proc_ {
            p::CONNECT_OPEN => Self::ConnectOpen { flags: r.u32()? },
            p::CONNECT_CLOSE => Self::ConnectClose,
            p::CONNECT_GET_LIB_VERSION => Self::GetLibVersion,
            p::CONNECT_LIST_SERVERS => Self::ListServers {
                need_results: r.u32()?,
                flags: r.u32()?,
            },
            p::CONNECT_LOOKUP_SERVER => Self::LookupServer {
                name: server(r)?,
                flags: r.u32()?,
            },
            p::SERVER_GET_THREADPOOL_PARAMETERS => Self::GetThreadpool {
                server: server(r)?,
                flags: r.u32()?,
            },
            p::SERVER_SET_THREADPOOL_PARAMETERS => Self::SetThreadpool {
                server: server(r)?,
                params: params(r, THREADPOOL_PARAMETERS_MAX)?,
                flags: r.u32()?,
            },
            p::SERVER_LIST_CLIENTS => Self::ListClients {
                server: server(r)?,
                need_results: r.u32()?,
                flags: r.u32()?,
            },
            p::SERVER_LOOKUP_CLIENT => Self::LookupClient {
                server: server(r)?,
                id: r.u64()?,
                flags: r.u32()?,
            },
            p::CLIENT_GET_INFO => Self::ClientInfo {
                client: ClientRef::decode(r)?,
                flags: r.u32()?,
            },
            p::CLIENT_CLOSE => Self::ClientClose {
                client: ClientRef::decode(r)?,
                flags: r.u32()?,
            },
            p::SERVER_GET_CLIENT_LIMITS => Self::GetClientLimits {
                server: server(r)?,
                flags: r.u32()?,
            },
            p::SERVER_SET_CLIENT_LIMITS => Self::SetClientLimits {
                server: server(r)?,
                params: params(r, CLIENT_LIMITS_MAX)?,
                flags: r.u32()?,
            },
            p::CONNECT_GET_LOGGING_OUTPUTS => Self::GetLogOutputs { flags: r.u32()? },
            p::CONNECT_GET_LOGGING_FILTERS => Self::GetLogFilters { flags: r.u32()? },
            p::CONNECT_SET_LOGGING_OUTPUTS => Self::SetLogOutputs {
                outputs: opt_string(r)?,
                flags: r.u32()?,
            },
            p::CONNECT_SET_LOGGING_FILTERS => Self::SetLogFilters {
                filters: opt_string(r)?,
                flags: r.u32()?,
            },
            p::SERVER_UPDATE_TLS_FILES => Self::UpdateTls {
                server: server(r)?,
                flags: r.u32()?,
            },
            p::CONNECT_SET_DAEMON_TIMEOUT => Self::SetDaemonTimeout {
                timeout: r.u32()?,
                flags: r.u32()?,
            },
            p::CONNECT_DAEMON_SHUTDOWN => Self::DaemonShutdown { flags: r.u32()? },
            _ => return Ok(None),
        }))
    }
}

/// Return values, encoded as the generated XDR code does.
pub mod reply {
    use super::*;
    use crate::protocol::RemoteError;

    /// `unsigned hyper libVer`.
    pub fn lib_version(v: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(8);
        b.put_xdr_u64(v);
        b.freeze()
    }

    /// `admin_nonnull_server servers<>; unsigned int ret`.
    pub fn servers(names: &[&str], count: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_xdr_u32(names.len() as u32);
        for n in names {
            b.put_xdr_string(n.as_bytes());
        }
        b.put_xdr_u32(count);
        b.freeze()
    }

    /// `admin_nonnull_server srv`.
    pub fn server(name: &str) -> Bytes {
        let mut b = BytesMut::new();
        b.put_xdr_string(name.as_bytes());
        b.freeze()
    }

    /// SERVER_LIST_CLIENTS' reply: the clients when asked for them, and their
    /// count. Like libvirt's generated dispatcher, more than
    /// [`CLIENT_LIST_MAX`](super::CLIENT_LIST_MAX) clients is an error,
    /// whether or not their ids were asked for.
    pub fn listed_clients(all: &[ClientRef], need_results: bool) -> Result<Bytes, RemoteError> {
        if all.len() > super::CLIENT_LIST_MAX {
            return Err(super::errors::too_many_clients(all.len()));
        }
        let shown = if need_results { all } else { &[][..] };
        Ok(clients(shown, all.len() as u32))
    }

    /// `admin_nonnull_client clients<>; unsigned int ret`.
    pub fn clients(clients: &[ClientRef], count: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_xdr_u32(clients.len() as u32);
        for c in clients {
            c.encode(&mut b);
        }
        b.put_xdr_u32(count);
        b.freeze()
    }

    /// `admin_nonnull_client clnt`.
    pub fn client(c: &ClientRef) -> Bytes {
        let mut b = BytesMut::new();
        c.encode(&mut b);
        b.freeze()
    }

    /// `admin_typed_param params<>`.
    pub fn params(params: &[TypedParam]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_xdr_u32(params.len() as u32);
        for p in params {
            p.encode(&mut b);
        }
        b.freeze()
    }

    /// `admin_nonnull_string outputs; unsigned int noutputs`.
    pub fn outputs(outputs: &str, n: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_xdr_string(outputs.as_bytes());
        b.put_xdr_u32(n);
        b.freeze()
    }

    /// `admin_string filters; unsigned int nfilters` (absent when there are none).
    pub fn filters(filters: Option<&str>, n: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_xdr_opt_string(filters.map(str::as_bytes));
        b.put_xdr_u32(n);
        b.freeze()
    }
}

/// The errors of the admin program, with the texts and domains of the libvirt
/// source that raises each (spec §10.3).
pub mod errors {
    use crate::protocol::error::{code, domain};
    use crate::protocol::RemoteError;

    /// `virNetDaemonGetServer` (most procedures).
    pub fn no_server(name: &str) -> RemoteError {
        RemoteError::new(
            code::NO_SERVER,
            domain::RPC,
            format!("No server named '{name}'"),
        )
    }

    /// The hand-written dispatchers of SERVER_SET_THREADPOOL_PARAMETERS,
    /// CLIENT_GET_INFO and SERVER_SET_CLIENT_LIMITS replace the error above.
    pub fn no_server_admin(name: &str) -> RemoteError {
        RemoteError::new(
            code::NO_SERVER,
            domain::ADMIN,
            format!("no server with matching name '{name}' found"),
        )
    }

    /// `virNetServerGetClient`.
    pub fn no_client(id: u64) -> RemoteError {
        RemoteError::new(
            code::NO_CLIENT,
            domain::RPC,
            format!("No client with matching ID '{id}'"),
        )
    }

    /// CLIENT_GET_INFO's own text.
    pub fn no_client_admin(id: u64) -> RemoteError {
        RemoteError::new(
            code::NO_CLIENT,
            domain::ADMIN,
            format!("no client with matching id '{id}' found"),
        )
    }

    /// `virCheckFlags` in the admin server's functions.
    pub fn check_flags(flags: u32, allowed: u32, function: &str) -> Result<(), RemoteError> {
        let bad = flags & !allowed;
        if bad == 0 {
            return Ok(());
        }
        let mut e = RemoteError::unsupported_flags(bad, function);
        e.domain = domain::ADMIN;
        Err(e)
    }

    /// The generated SERVER_LIST_CLIENTS dispatcher, past `ADMIN_CLIENT_LIST_MAX`.
    pub fn too_many_clients(n: usize) -> RemoteError {
        RemoteError::new(
            code::INTERNAL_ERROR,
            domain::ADMIN,
            format!(
                "Too many clients '{n}' for limit '{}'",
                super::CLIENT_LIST_MAX
            ),
        )
    }

    pub fn invalid_arg(domain: i32, detail: &str) -> RemoteError {
        RemoteError::new(code::INVALID_ARG, domain, detail)
    }
}

/// Decodes a `typed_param` array (client side and tests).
pub fn decode_params(payload: &[u8], max: usize) -> Result<Vec<TypedParam>, XdrError> {
    params(&mut XdrReader::new(payload), max)
}

/// Decodes an `admin_nonnull_client` array with its count (client side and tests).
pub fn decode_clients(payload: &[u8]) -> Result<(Vec<ClientRef>, u32), XdrError> {
    let r = &mut XdrReader::new(payload);
    let n = array_len(r, CLIENT_LIST_MAX)?;
    let clients = (0..n)
        .map(|_| ClientRef::decode(r))
        .collect::<Result<_, _>>()?;
    Ok((clients, r.u32()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_clients_than_libvirts_list_limit_is_its_error() {
        let refs: Vec<ClientRef> = (1..=CLIENT_LIST_MAX as u64 + 1)
            .map(|id| ClientRef {
                server: "virtlockd".into(),
                id,
                timestamp: 0,
                transport: TRANSPORT_UNIX,
            })
            .collect();
        let (at_limit, over) = (&refs[..CLIENT_LIST_MAX], &refs[..]);
        let (decoded, n) = decode_clients(&reply::listed_clients(at_limit, true).unwrap()).unwrap();
        assert_eq!(
            (decoded.len(), n),
            (CLIENT_LIST_MAX, CLIENT_LIST_MAX as u32)
        );
        let counted = reply::listed_clients(at_limit, false).unwrap();
        assert_eq!(decode_clients(&counted).unwrap().1, CLIENT_LIST_MAX as u32);
        for need_results in [true, false] {
            let e = reply::listed_clients(over, need_results).unwrap_err();
            assert_eq!(
                (e.code, e.domain, e.message.as_str()),
                (
                    1,
                    62,
                    "internal error: Too many clients '16385' for limit '16384'"
                )
            );
        }
    }

    #[test]
    fn typed_params_round_trip() {
        let ps = vec![
            TypedParam::new("a", Value::Int(-3)),
            TypedParam::new("b", Value::UInt(7)),
            TypedParam::new("c", Value::LLong(-9)),
            TypedParam::new("d", Value::ULLong(1 << 40)),
            TypedParam::new("e", Value::Double(0.5)),
            TypedParam::new("f", Value::Boolean(true)),
            TypedParam::new("g", Value::String("root".into())),
        ];
        let b = reply::params(&ps);
        assert_eq!(decode_params(&b, 64).unwrap(), ps);
        assert!(decode_params(&b, 6).is_err());
    }

    #[test]
    fn unknown_param_type_fails_decoding() {
        let mut b = BytesMut::new();
        b.put_xdr_u32(1);
        b.put_xdr_string(b"x");
        b.put_xdr_i32(8);
        b.put_xdr_u32(0);
        assert!(decode_params(&b, 32).is_err());
    }

    #[test]
    fn calls_decode_field_by_field() {
        let mut b = BytesMut::new();
        b.put_xdr_string(b"virtlockd");
        b.put_xdr_u64(42);
        b.put_xdr_u64(1_700_000_000);
        b.put_xdr_u32(0);
        b.put_xdr_u32(0);
        let call = AdminCall::decode(procedure::CLIENT_GET_INFO, &b)
            .unwrap()
            .unwrap();
        let AdminCall::ClientInfo { client, flags } = call else {
            panic!("{call:?}")
        };
        assert_eq!(
            (client.server.as_str(), client.id, flags),
            ("virtlockd", 42, 0)
        );
        assert_eq!(AdminCall::decode(21, &[]).unwrap(), None);
        assert!(AdminCall::decode(procedure::CONNECT_OPEN, &[0, 0]).is_err());
    }
}
