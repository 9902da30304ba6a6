//! Writes the man pages and shell completions generated from the code into
//! `docs/man/` and `docs/completions/` (see `common/docs.rs`):
//!
//!     cargo run --example gen_docs
//!
//! Run it after changing a command line or the sample `virtlockd.conf`;
//! `tests/it/docs.rs` fails while the committed files are stale.

#[path = "common/docs.rs"]
mod docs;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = match docs::render_all(root) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("gen_docs: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (path, bytes) in files {
        let target = root.join(&path);
        let written = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&target, bytes));
        if let Err(e) = written {
            eprintln!("gen_docs: {}: {e}", target.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}
