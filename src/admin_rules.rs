//! The rules of libvirt's admin program (spec §10) that do not depend on the
//! running daemon: what each settable call checks after its server lookup, in
//! libvirt's order and with its texts, what it changes, and how settings are
//! reported. Pure: the admin connection actor applies them, as the lock
//! program's rules are in [`crate::session`].

use crate::client_limits::ClientLimits;
use crate::logging::{self, Filter, LogError, Output};
use crate::protocol::admin::{errors, TypedParam, Value};
use crate::protocol::error::{code, domain};
use crate::protocol::typed_params::{check_field_lengths, get_uint, validate};
use crate::protocol::RemoteError;

/// SERVER_SET_CLIENT_LIMITS: field lengths, flags, names and types, then the
/// new limits; a parameter not given keeps its value.
pub fn set_client_limits(
    current: ClientLimits,
    params: &[TypedParam],
    flags: u32,
) -> Result<ClientLimits, RemoteError> {
    check_field_lengths(params)?;
    errors::check_flags(flags, 0, "adminServerSetClientLimits")?;
    validate(
        params,
        &[("nclients_max", "uint"), ("nclients_unauth_max", "uint")],
    )?;
    let max = get_uint(params, "nclients_max").map_or(current.max, |v| v as usize);
    let unauth_max =
        get_uint(params, "nclients_unauth_max").map_or(current.unauth_max, |v| v as usize);
    if max < unauth_max {
        return Err(errors::invalid_arg(
            domain::RPC,
            "The overall maximum number of clients waiting for authentication must not be less than the overall maximum number of clients",
        ));
    }
    Ok(ClientLimits { max, unauth_max })
}

/// SERVER_GET_CLIENT_LIMITS's parameters.
pub fn client_limit_params(limits: ClientLimits, connected: usize) -> Vec<TypedParam> {
    [
        ("nclients_max", limits.max),
        ("nclients", connected),
        ("nclients_unauth_max", limits.unauth_max),
        ("nclients_unauth", 0),
    ]
    .into_iter()
    .map(|(f, v)| TypedParam::new(f, Value::UInt(v as u32)))
    .collect()
}

/// Our "thread pool" as libvirt's API describes one. Like libvirt's virtlockd,
/// the daemon has no worker pool: every call is handled on the event loop
/// (lockspaces on filesystems that may hang have a thread each, which is not a
/// pool of workers). So all counts are 0, except the priority workers last set.
pub fn threadpool_params(prio_workers: u32) -> Vec<TypedParam> {
    [
        ("minWorkers", 0),
        ("maxWorkers", 0),
        ("nWorkers", 0),
        ("freeWorkers", 0),
        ("prioWorkers", prio_workers),
        ("jobQueueDepth", 0),
    ]
    .into_iter()
    .map(|(f, v)| TypedParam::new(f, Value::UInt(v)))
    .collect()
}

/// SERVER_SET_THREADPOOL_PARAMETERS: `virThreadPoolSetParameters` on a pool
/// with `maxWorkers` 0. Answers the new `prioWorkers`, if one was given.
pub fn set_threadpool(params: &[TypedParam], flags: u32) -> Result<Option<u32>, RemoteError> {
    check_field_lengths(params)?;
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
    Ok(get_uint(params, "prioWorkers"))
}

/// What CLIENT_GET_INFO's lookups found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFound {
    NoServer,
    NoClient,
    /// The client exists; whether it has made a call yet.
    Client {
        called: bool,
    },
}

/// CLIENT_GET_INFO's checks, in its dispatcher's order and with its own texts
/// for unknown names: server, client, flags, then an identity (libvirt builds
/// one on a client's first call).
pub fn check_client_info(
    server: &str,
    id: u64,
    found: ClientFound,
    flags: u32,
) -> Result<(), RemoteError> {
    let called = match found {
        ClientFound::NoServer => return Err(errors::no_server_admin(server)),
        ClientFound::NoClient => return Err(errors::no_client_admin(id)),
        ClientFound::Client { called } => called,
    };
    errors::check_flags(flags, 0, "adminClientGetInfo")?;
    if !called {
        return Err(RemoteError::new(
            code::INTERNAL_ERROR,
            domain::RPC,
            "No identity information available for client",
        ));
    }
    Ok(())
}

/// A logging setting the admin API refused or could not put into effect.
pub fn log_error(e: LogError) -> RemoteError {
    let c = if e.is_invalid_argument() {
        code::INVALID_ARG
    } else {
        code::INTERNAL_ERROR
    };
    RemoteError::new(c, domain::NONE, e.to_string())
}

/// `virLogSetOutputs`'s argument: absent or blank selects the default outputs
/// (an empty list).
pub fn log_outputs(arg: Option<&str>) -> Result<Vec<Output>, RemoteError> {
    match arg {
        Some(s) if !s.trim().is_empty() => logging::parse_outputs(s).map_err(log_error),
        _ => Ok(Vec::new()),
    }
}

/// `virLogSetFilters`'s argument: absent or empty removes every filter.
pub fn log_filters(arg: Option<&str>) -> Result<Vec<Filter>, RemoteError> {
    match arg {
        Some(s) => logging::parse_filters(s).map_err(log_error),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uint(field: &str, v: u32) -> TypedParam {
        TypedParam::new(field, Value::UInt(v))
    }

    #[test]
    fn client_limits_keep_what_is_not_given_and_refuse_unauth_above_max() {
        let now = ClientLimits::new(10);
        let set = set_client_limits(now, &[uint("nclients_unauth_max", 4)], 0).unwrap();
        assert_eq!(
            set,
            ClientLimits {
                max: 10,
                unauth_max: 4
            }
        );
        let e = set_client_limits(set, &[uint("nclients_max", 3)], 0).unwrap_err();
        assert_eq!((e.code, e.domain), (code::INVALID_ARG, domain::RPC));
        assert_eq!(
            set_client_limits(set, &[uint("nclients_max", 4)], 0)
                .unwrap()
                .max,
            4
        );
    }

    #[test]
    fn client_limits_check_field_length_then_flags_then_names() {
        let long = uint(&"x".repeat(80), 1);
        let now = ClientLimits::new(1);
        let e = set_client_limits(now, &[long], 1).unwrap_err();
        assert!(e.message.contains("too big for destination"), "{e:?}");
        let e = set_client_limits(now, &[uint("nclients", 1)], 1).unwrap_err();
        assert_eq!(e.code, code::INVALID_ARG);
        assert!(e.message.contains("unsupported flags"), "{e:?}");
        let e = set_client_limits(now, &[uint("nclients", 1)], 0).unwrap_err();
        assert_eq!(e.code, code::ARGUMENT_UNSUPPORTED);
        let e = set_client_limits(now, &[TypedParam::new("nclients_max", Value::Int(1))], 0)
            .unwrap_err();
        assert!(e.message.contains("invalid type 'int'"), "{e:?}");
    }

    #[test]
    fn threadpool_accepts_only_a_pool_of_no_workers() {
        assert_eq!(
            set_threadpool(&[uint("prioWorkers", 3)], 0).unwrap(),
            Some(3)
        );
        assert_eq!(set_threadpool(&[uint("maxWorkers", 0)], 0).unwrap(), None);
        let e = set_threadpool(&[uint("minWorkers", 1)], 0).unwrap_err();
        assert!(e.message.contains("minWorkers cannot be larger"), "{e:?}");
        let e = set_threadpool(&[uint("minWorkers", 1), uint("maxWorkers", 2)], 0).unwrap_err();
        assert!(e.message.contains("must not be switched"), "{e:?}");
        let prio = threadpool_params(5);
        assert_eq!(prio.len(), 6);
        assert!(prio.contains(&uint("prioWorkers", 5)));
    }

    #[test]
    fn client_info_checks_server_client_flags_then_identity() {
        let e = check_client_info("nope", 1, ClientFound::NoServer, 1).unwrap_err();
        assert_eq!((e.code, e.domain), (code::NO_SERVER, domain::ADMIN));
        let e = check_client_info("admin", 9, ClientFound::NoClient, 1).unwrap_err();
        assert_eq!((e.code, e.domain), (code::NO_CLIENT, domain::ADMIN));
        let quiet = ClientFound::Client { called: false };
        let e = check_client_info("admin", 9, quiet, 1).unwrap_err();
        assert_eq!(e.code, code::INVALID_ARG);
        let e = check_client_info("admin", 9, quiet, 0).unwrap_err();
        assert_eq!((e.code, e.domain), (code::INTERNAL_ERROR, domain::RPC));
        assert!(check_client_info("admin", 9, ClientFound::Client { called: true }, 0).is_ok());
    }

    #[test]
    fn blank_log_settings_select_the_defaults_and_bad_ones_are_invalid_arguments() {
        assert!(log_outputs(None).unwrap().is_empty());
        assert!(log_outputs(Some("  ")).unwrap().is_empty());
        assert_eq!(log_outputs(Some("1:stderr")).unwrap().len(), 1);
        assert_eq!(
            log_outputs(Some("9:nowhere")).unwrap_err().code,
            code::INVALID_ARG
        );
        assert!(log_filters(None).unwrap().is_empty());
        assert_eq!(log_filters(Some("1:foo 3:bar")).unwrap().len(), 2);
        assert_eq!(
            log_filters(Some("x:foo")).unwrap_err().code,
            code::INVALID_ARG
        );
    }
}
