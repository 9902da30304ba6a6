//! Lock-engine costs on a tmpfs directory (/dev/shm): one exclusive
//! acquire + release of an existing file (open, fcntl, close), the same with
//! AUTOCREATE (create, lock, inode check, unlink), the in-table paths that make
//! no syscall (shared join, busy refusal), and release-all for one owner among
//! many held leases.

use std::os::unix::ffi::OsStrExt;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use virtlockd::lockspace::{create_directory, LockSpace};
use virtlockd::protocol::lock::{ACQUIRE_AUTOCREATE, ACQUIRE_SHARED};

fn space() -> (tempfile::TempDir, LockSpace) {
    let dir = tempfile::Builder::new()
        .prefix("engine-bench")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let key = dir.path().as_os_str().as_bytes().to_vec();
    create_directory(&key).unwrap();
    (dir, LockSpace::directory(key))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");

    let (dir, mut ls) = space();
    std::fs::write(dir.path().join("disk"), b"").unwrap();
    g.bench_function("acquire_release_existing", |b| {
        b.iter(|| {
            ls.acquire(b"disk", 1, 0).unwrap();
            ls.release(b"disk", 1).unwrap();
        })
    });

    g.bench_function("acquire_release_autocreate", |b| {
        b.iter(|| {
            ls.acquire(b"lease", 1, ACQUIRE_AUTOCREATE).unwrap();
            ls.release(b"lease", 1).unwrap();
        })
    });

    ls.acquire(b"shared", 1, ACQUIRE_SHARED | ACQUIRE_AUTOCREATE)
        .unwrap();
    g.bench_function("join_shared_in_table", |b| {
        b.iter(|| {
            ls.acquire(b"shared", 2, ACQUIRE_SHARED).unwrap();
            ls.release(b"shared", 2).unwrap();
        })
    });

    ls.acquire(b"disk", 1, 0).unwrap();
    g.bench_function("refuse_busy_in_table", |b| {
        b.iter(|| black_box(ls.acquire(b"disk", 2, 0).unwrap_err()))
    });

    g.bench_function("release_owner_among_1000_leases", |b| {
        b.iter_batched(
            || {
                let (dir, mut ls) = space();
                for i in 0..1000u32 {
                    let owner = (i % 100) as i32 + 10;
                    ls.acquire(format!("r{i}").as_bytes(), owner, ACQUIRE_AUTOCREATE)
                        .unwrap();
                }
                (dir, ls)
            },
            |(dir, mut ls)| {
                assert_eq!(ls.release_owner(10).len(), 10);
                (dir, ls)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
