//! The admin program's arguments (`AdminCall::decode`), typed parameters
//! included, as any local client of the admin socket can send them, and the
//! checks the daemon runs on those parameters. Input: one byte choosing the
//! procedure (0 to 255: unknown ones included), then the payload.
//!
//! Asserts: no panic; an unknown procedure is `None` whatever the payload;
//! typed parameters and client references round-trip through their encoders;
//! the parameter checks accept exactly the parameter lists libvirt accepts
//! (known names, the right type, each once) and never panic on the others.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use virtlockd::protocol::admin::{
    self, decode_params, procedure, reply, AdminCall, ClientRef, TypedParam, Value,
};
use virtlockd::protocol::typed_params::{check_field_lengths, get_uint, validate, FIELD_LENGTH};

const THREADPOOL_KEYS: &[(&str, &str)] = &[
    ("minWorkers", "uint"),
    ("maxWorkers", "uint"),
    ("prioWorkers", "uint"),
];
const CLIENT_LIMIT_KEYS: &[(&str, &str)] =
    &[("nclients_max", "uint"), ("nclients_unauth_max", "uint")];

/// Values compared by their bits: a NaN sent by a client is still the same NaN.
fn same(a: &[TypedParam], b: &[TypedParam]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.field == y.field
                && match (&x.value, &y.value) {
                    (Value::Double(p), Value::Double(q)) => p.to_bits() == q.to_bits(),
                    (p, q) => p == q,
                }
        })
}

fn check_params(params: &[TypedParam], max: usize, keys: &[(&str, &str)]) {
    assert!(params.len() <= max);
    let encoded = reply::params(params);
    let back = decode_params(&encoded, max).expect("re-encoded parameters decode");
    assert!(same(params, &back), "{params:?} came back as {back:?}");

    let too_long = params.iter().any(|p| p.field.len() >= FIELD_LENGTH);
    assert_eq!(check_field_lengths(params).is_err(), too_long);

    let acceptable = params.iter().enumerate().all(|(i, p)| {
        keys.iter()
            .any(|(name, ty)| p.field == *name && p.value.type_name() == *ty)
            && params[..i].iter().all(|q| q.field != p.field)
    });
    let verdict = validate(params, keys);
    assert_eq!(verdict.is_ok(), acceptable, "{params:?}: {verdict:?}");
    if acceptable {
        for (name, _) in keys {
            let given = params.iter().find(|p| p.field == *name);
            let expected = given.map(|p| match p.value {
                Value::UInt(v) => v,
                _ => unreachable!("validated as uint"),
            });
            assert_eq!(get_uint(params, name), expected);
        }
    }
}

fn check_client(client: &ClientRef) {
    let encoded = reply::client(client);
    let call = {
        let mut b = BytesMut::from(&encoded[..]);
        b.extend_from_slice(&[0, 0, 0, 0]);
        AdminCall::decode(procedure::CLIENT_GET_INFO, &b)
    };
    match call {
        Ok(Some(AdminCall::ClientInfo {
            client: back,
            flags: 0,
        })) => assert_eq!(&back, client),
        other => panic!("{client:?} came back as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let proc_ = i32::from(selector);
    let decoded = AdminCall::decode(proc_, payload);
    let known = (procedure::CONNECT_OPEN..=procedure::CONNECT_DAEMON_SHUTDOWN).contains(&proc_);
    if !known {
        assert!(matches!(decoded, Ok(None)), "{proc_}: {decoded:?}");
        return;
    }
    let Ok(Some(call)) = decoded else {
        assert!(decoded.is_err(), "known procedure {proc_} decoded to None");
        return;
    };
    match &call {
        AdminCall::SetThreadpool { params, .. } => {
            check_params(params, admin::THREADPOOL_PARAMETERS_MAX, THREADPOOL_KEYS)
        }
        AdminCall::SetClientLimits { params, .. } => {
            check_params(params, admin::CLIENT_LIMITS_MAX, CLIENT_LIMIT_KEYS)
        }
        AdminCall::ClientInfo { client, .. } | AdminCall::ClientClose { client, .. } => {
            check_client(client)
        }
        _ => {}
    }
});
