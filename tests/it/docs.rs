//! The committed man pages and shell completions (`docs/`) are what the code
//! generates now: a changed option, subcommand or sample setting without a
//! regenerated page fails here. Regenerate with `cargo run --example gen_docs`.

#[path = "../../examples/common/docs.rs"]
mod generate;

use std::path::Path;

#[test]
fn committed_docs_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = generate::render_all(root).expect("generate docs");
    let stale: Vec<String> = files
        .iter()
        .filter(|(path, bytes)| std::fs::read(root.join(path)).ok().as_deref() != Some(&bytes[..]))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        stale.is_empty(),
        "stale or missing generated docs (run `cargo run --example gen_docs`): {stale:?}"
    );
}

/// The sample file, and so virtlockd.conf(5), documents every key the daemon
/// reads, and no key the daemon does not know.
#[test]
fn config_page_documents_every_known_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = std::fs::read_to_string(root.join(generate::SAMPLE_CONFIG)).expect("sample");
    let documented: Vec<&str> = sample
        .lines()
        .filter_map(generate::setting)
        .map(|(key, _)| key)
        .collect();
    let mut known = virtlockd::config::KNOWN_KEYS.to_vec();
    let mut listed = documented.clone();
    known.sort_unstable();
    listed.sort_unstable();
    assert_eq!(listed, known, "settings in {}", generate::SAMPLE_CONFIG);
    let page = generate::config_page(&sample);
    for key in known {
        assert!(
            page.contains(&format!(".TP\n\\fB{key}\\fR\n")),
            "{key} has no entry in virtlockd.conf(5)"
        );
    }
}
