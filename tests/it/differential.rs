//! Differential test against libvirt's virtlockd: one scenario (see
//! `differential/scenario.rs`) runs against our daemon and against
//! `/usr/sbin/virtlockd`, each in its own mount namespace with the lockspaces at
//! the same path. After every step the test records the reply frames byte for
//! byte (so every field: status, code, domain, message, level, dom, str1-3, int1,
//! int2, net), the files below the lockspace base with their modes, and the
//! daemon's kernel locks (mode, range, which file). Any difference must be one of
//! the deliberate fixes of README's Compatibility section, and every allowed
//! difference must still occur. Needs root, namespaces and libvirt's daemon.
//! `differential/randomized.rs` runs seeded random sequences the same way.

mod observe;
mod random;
mod randomized;
mod scenario;

use std::collections::{BTreeMap, HashMap};

use crate::support::namespaced::{prerequisites, Impl, Namespaced};
use observe::{compatibility_fixes, difference, files, locks, prepare, Conn, Observation};
use scenario::{Act, Step, ALLOWED};

#[tokio::test]
async fn same_replies_files_and_locks_as_libvirt() {
    if !prerequisites("same_replies_files_and_locks_as_libvirt") {
        return;
    }
    let steps = scenario::steps();
    let (ours, libvirt) = tokio::join!(observe(Impl::Ours, &steps), observe(Impl::Libvirt, &steps));
    let fixes = compatibility_fixes();
    let mut unexplained = Vec::new();
    let mut seen_fixes = BTreeMap::new();
    for ((step, o), l) in steps.iter().zip(&ours).zip(&libvirt) {
        let allowed = allowed_fix(&step.label);
        match (o == l, allowed) {
            (true, _) => {}
            (false, Some(fix)) => {
                seen_fixes.insert(step.label.clone(), fix);
            }
            (false, None) => {
                unexplained.push(format!("step `{}`:\n{}", step.label, difference(o, l)))
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} differences that are not deliberate fixes:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    let allowlisted: Vec<&Step> = steps
        .iter()
        .filter(|s| allowed_fix(&s.label).is_some())
        .collect();
    for step in &allowlisted {
        let fix = allowed_fix(&step.label).unwrap_or_default();
        assert!(
            fixes.contains(&fix),
            "fix {fix} (step `{}`) is not in README's Compatibility list {fixes:?}",
            step.label
        );
        assert!(
            seen_fixes.contains_key(&step.label),
            "step `{}` is allowed to differ (fix {fix}) but did not",
            step.label
        );
    }
    eprintln!(
        "differential: {} steps, {} identical, {} deliberate differences: {seen_fixes:?}",
        steps.len(),
        steps.len() - seen_fixes.len(),
        seen_fixes.len(),
    );
}

/// The README fix a step label is tied to, if any.
fn allowed_fix(label: &str) -> Option<u32> {
    ALLOWED
        .iter()
        .find(|(prefix, _)| label.starts_with(prefix))
        .map(|&(_, fix)| fix)
}

/// Runs every step against one implementation; one observation per step.
async fn observe(which: Impl, steps: &[Step]) -> Vec<Observation> {
    let mut ns = Namespaced::start(which);
    drop(ns.wait_serving(which, "start-up").await);
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let replies = match &step.act {
            Act::Call(call) => {
                let conn = connection(&mut conns, &ns, step.conn).await;
                conn.call(call).await
            }
            Act::Raw(bytes) => {
                let conn = connection(&mut conns, &ns, step.conn).await;
                conn.raw(bytes).await
            }
            Act::Close => {
                if let Some(conn) = conns.remove(&step.conn) {
                    conn.close().await;
                }
                Vec::new()
            }
            Act::File(rel) => {
                prepare(&ns, rel, false);
                Vec::new()
            }
            Act::Dir(rel) => {
                prepare(&ns, rel, true);
                Vec::new()
            }
        };
        out.push(Observation {
            replies,
            files: files(&ns),
            locks: locks(&ns),
            owners: Vec::new(),
        });
    }
    ns.assert_alive(&format!("{which:?} at the end of the scenario"));
    out
}

async fn connection<'a>(
    conns: &'a mut HashMap<usize, Conn>,
    ns: &Namespaced,
    n: usize,
) -> &'a mut Conn {
    if let std::collections::hash_map::Entry::Vacant(e) = conns.entry(n) {
        e.insert(Conn::connect(ns).await);
    }
    conns.get_mut(&n).expect("connection")
}
