//! Wire codec costs: decoding a pipelined stream of ACQUIRE calls, decoding their
//! arguments, and encoding the void and busy replies.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::codec::{Decoder, Encoder};
use virtlockd::protocol::error::{code, domain};
use virtlockd::protocol::lock::{LockCall, Procedure, ACQUIRE_AUTOCREATE};
use virtlockd::protocol::{error_reply, void_reply, Frame, FrameCodec, RemoteError};

fn acquire_frame(serial: u32) -> Frame {
    let call = LockCall::Acquire {
        path: b"/var/lib/libvirt/lockd/files".to_vec().into(),
        name: b"c51e77e85bb5706077df1c480229dee2efec81732e4965db63e529b3ea614e45"
            .to_vec()
            .into(),
        flags: ACQUIRE_AUTOCREATE,
    };
    virtlockd::client::call_frame(&call, serial)
}

fn bench(c: &mut Criterion) {
    const N: usize = 1000;
    let mut wire = BytesMut::new();
    for i in 0..N {
        FrameCodec
            .encode(acquire_frame(i as u32), &mut wire)
            .unwrap();
    }
    let wire = wire.freeze();

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("decode_1000_acquire_frames", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut n = 0;
            while let Some(f) = FrameCodec.decode(&mut buf).unwrap() {
                black_box(&f);
                n += 1;
            }
            assert_eq!(n, N);
        })
    });
    g.bench_function("decode_1000_acquire_args", |b| {
        let f = acquire_frame(0);
        b.iter(|| {
            for _ in 0..N {
                black_box(LockCall::decode(Procedure::AcquireResource, &f.payload).unwrap());
            }
        })
    });
    g.finish();

    let header = acquire_frame(7).header;
    c.bench_function("codec/encode_void_reply", |b| {
        let mut out = BytesMut::with_capacity(1 << 16);
        b.iter(|| {
            out.clear();
            FrameCodec
                .encode(void_reply(black_box(&header)), &mut out)
                .unwrap();
        })
    });
    let busy = RemoteError::new(
        code::RESOURCE_BUSY,
        domain::LOCKSPACE,
        "Lockspace resource 'c51e77e85bb5706077df1c480229dee2efec81732e4965db63e529b3ea614e45' is locked",
    );
    c.bench_function("codec/encode_busy_error_reply", |b| {
        let mut out = BytesMut::with_capacity(1 << 16);
        b.iter(|| {
            out.clear();
            FrameCodec
                .encode(error_reply(black_box(&header), &busy), &mut out)
                .unwrap();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
