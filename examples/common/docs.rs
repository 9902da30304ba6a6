//! The generated documentation: man pages virtlockd(8), virtlockctl(1) and
//! virtlockd.conf(5), and shell completions, as (path, bytes) pairs relative to
//! the crate root. Written by `examples/gen_docs.rs`; `tests/it/docs.rs`
//! regenerates them and fails when the committed files are stale.
//!
//! The command-line pages come from the clap definitions (`virtlockd::cli`,
//! `virtlockd::ctl::cli`), virtlockd's environment, signals and exit codes from
//! its `--help` epilogue, and virtlockd.conf(5) from the commented sample
//! `virtlockd.conf`, so that each fact is written down once.

use std::io;
use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

/// Where the pages go, relative to the crate root.
pub const MAN_DIR: &str = "docs/man";
/// Where the completions go, relative to the crate root.
pub const COMPLETIONS_DIR: &str = "docs/completions";
/// The sample configuration the virtlockd.conf(5) page is made from.
pub const SAMPLE_CONFIG: &str = "virtlockd.conf";

/// Every generated file; `crate_root` is where `virtlockd.conf` is read from.
pub fn render_all(crate_root: &std::path::Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let sample = std::fs::read_to_string(crate_root.join(SAMPLE_CONFIG))?;
    let mut out = vec![
        (man_path("virtlockd.8"), virtlockd_page()?),
        (man_path("virtlockctl.1"), virtlockctl_page()?),
        (
            man_path("virtlockd.conf.5"),
            config_page(&sample).into_bytes(),
        ),
    ];
    for (name, cmd) in [
        ("virtlockd", virtlockd_command()),
        ("virtlockctl", virtlockd::ctl::cli::Cli::command()),
    ] {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut cmd = cmd.clone();
            let mut bytes = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut bytes);
            out.push((completion_path(shell, name), bytes));
        }
    }
    Ok(out)
}

fn man_path(name: &str) -> PathBuf {
    PathBuf::from(MAN_DIR).join(name)
}

/// The file names each shell looks for in its vendor completion directory.
fn completion_path(shell: Shell, name: &str) -> PathBuf {
    let file = match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name.to_owned(),
    };
    PathBuf::from(COMPLETIONS_DIR)
        .join(shell.to_string())
        .join(file)
}

/// The daemon's command as root sees it: the man page documents the system daemon.
fn virtlockd_command() -> clap::Command {
    virtlockd::cli::Cli::command()
}

fn man(cmd: clap::Command, section: &str) -> Man {
    let version = cmd.get_version().unwrap_or_default().to_owned();
    Man::new(cmd)
        .section(section)
        .source(format!(
            "virtlockd-rs {}",
            version.split(' ').next().unwrap_or("")
        ))
        .manual("virtlockd-rs")
}

fn virtlockd_page() -> io::Result<Vec<u8>> {
    let page = man(virtlockd_command(), "8");
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    out.extend(epilogue_sections(&virtlockd::cli::after_help(true)).into_bytes());
    out.extend(
        concat!(
            ".SH \"LIVE UPGRADE\"\n",
            "SIGUSR1 (\\fBsystemctl reload virtlockd\\fR) re-executes the binary named by\n",
            "argv[0] in place: same pid, so every lock is kept, and every client connection\n",
            "stays open. The state is handed over in the run directory; libvirt's own\n",
            "virtlockd and this one adopt each other's state, so\n",
            "\\fI/usr/sbin/virtlockd\\fR can be switched between them without downtime.\n",
            "Never use SIGKILL or a restart to replace the daemon: a stop or restart fences\n",
            "every lease holder, and SIGKILL loses every lock unless crash\\-safe mode is\n",
            "active (\\fBcrash_safe\\fR in virtlockd.conf(5); \\fBvirtlockctl status\\fR says\n",
            "whether it is).\n",
        )
        .as_bytes(),
    );
    out.extend(
        see_also(&[
            "virtlockctl(1)",
            "virtlockd.conf(5)",
            "virt-admin(1)",
            "libvirtd(8)",
        ])
        .into_bytes(),
    );
    Ok(out)
}

fn virtlockctl_page() -> io::Result<Vec<u8>> {
    let cmd = virtlockd::ctl::cli::Cli::command();
    let page = man(cmd.clone(), "1");
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    out.extend(commands_section(&cmd).into_bytes());
    out.extend(
        concat!(
            ".SH \"EXIT STATUS\"\n",
            "0 on success; 1 on an error (daemon unreachable, bad arguments), and for\n",
            "\\fBwho\\fR when no lease of the path is held; 2 for \\fBcheck\\fR when locks\n",
            "under the directory stay on this host.\n",
            ".SH \"JSON OUTPUT\"\n",
            "With \\fB\\-\\-json\\fR every command prints one JSON object. Fields may be added\n",
            "in later versions, never removed or changed; the README lists them.\n",
        )
        .as_bytes(),
    );
    out.extend(see_also(&["virtlockd(8)", "virtlockd.conf(5)", "virt-admin(1)"]).into_bytes());
    Ok(out)
}

/// One entry per subcommand, with its own arguments: the page documents the
/// whole tool rather than one page per subcommand.
fn commands_section(cmd: &clap::Command) -> String {
    let mut s = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
        let mut usage = format!("\\fB{}\\fR", escape(sub.get_name()));
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_id() != "help")
        {
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            match arg.get_long() {
                Some(long) => usage.push_str(&format!(
                    " [\\fB\\-\\-{}\\fR \\fI{}\\fR]",
                    escape(long),
                    escape(&value)
                )),
                None => usage.push_str(&format!(" \\fI{}\\fR", escape(&value))),
            }
        }
        s.push_str(&format!(".TP\n{usage}\n"));
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            s.push_str(&text(&about.to_string()));
        }
        let options: Vec<_> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_long().is_some() && a.get_id() != "help")
            .collect();
        if !options.is_empty() {
            s.push_str(".RS\n");
            for arg in options {
                let value = arg
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string());
                s.push_str(&format!(
                    ".TP\n\\fB\\-\\-{}\\fR{}\n",
                    escape(arg.get_long().unwrap_or_default()),
                    value
                        .map(|v| format!(" \\fI{}\\fR", escape(&v)))
                        .unwrap_or_default()
                ));
                if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
                    s.push_str(&text(&help.to_string()));
                }
            }
            s.push_str(".RE\n");
        }
    }
    s
}

/// virtlockd's `--help` epilogue as man sections: blocks separated by blank
/// lines, each a title line ending in ':' (or "Title: text") and entries
/// indented by two spaces, name and description separated by two or more spaces.
fn epilogue_sections(epilogue: &str) -> String {
    let mut s = String::new();
    for block in epilogue.split("\n\n") {
        let mut lines = block.lines();
        let Some(title) = lines.next() else { continue };
        let (title, inline) = title.split_once(':').unwrap_or((title, ""));
        let heading = match title {
            t if t.starts_with("Default paths") => "FILES".to_owned(),
            "Exit codes" => "EXIT STATUS".to_owned(),
            t => t.to_uppercase(),
        };
        s.push_str(&format!(".SH \"{}\"\n", escape(&heading)));
        if !inline.trim().is_empty() {
            s.push_str(&text(inline.trim()));
        }
        let files = heading == "FILES";
        for entry in lines {
            let entry = entry.trim();
            // "NAME  what it is", or in the paths block "Label: path".
            let split = if files {
                entry.split_once(": ")
            } else {
                entry.split_once("  ")
            };
            match split {
                Some((label, path)) if files => s.push_str(&format!(
                    ".TP\n\\fI{}\\fR\n{}",
                    escape(path.trim()),
                    text(label.trim())
                )),
                Some((name, what)) => s.push_str(&format!(
                    ".TP\n\\fB{}\\fR\n{}",
                    escape(name.trim()),
                    text(what.trim())
                )),
                None => s.push_str(&text(entry)),
            }
        }
    }
    s
}

/// virtlockd.conf(5), from the commented sample: its opening comment is the
/// description, each banner a section, and the comment above each commented-out
/// `key = value` line that key's entry.
pub fn config_page(sample: &str) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut s = format!(
        ".TH virtlockd.conf 5 \"\" \"virtlockd-rs {version}\" virtlockd-rs\n\
.SH NAME\nvirtlockd.conf \\- configuration file of virtlockd(8)\n\
.SH SYNOPSIS\n\\fI/etc/libvirt/virtlockd.conf\\fR (root), \
\\fI$XDG_CONFIG_HOME/libvirt/virtlockd.conf\\fR (user), or the file given with \\fBvirtlockd \\-f\\fR\n\
.SH DESCRIPTION\n"
    );
    let mut comment: Vec<&str> = Vec::new();
    let mut lines = sample.lines().peekable();
    // The opening comment, up to the first blank line; its first line is a title.
    let mut first = true;
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        if !std::mem::take(&mut first) {
            comment.push(line.strip_prefix('#').unwrap_or(line));
        }
    }
    s.push_str(&comment_text(&comment, ".PP\n"));
    comment.clear();
    let mut in_banner = false;
    while let Some(line) = lines.next() {
        if line.starts_with("###") {
            in_banner = !in_banner;
            if in_banner {
                // "#", "# Title", "#" follow; the closing rule is the next "###".
                let title = lines
                    .by_ref()
                    .take_while(|l| !l.starts_with("###"))
                    .map(|l| l.trim_start_matches('#').trim())
                    .find(|l| !l.is_empty())
                    .unwrap_or("");
                s.push_str(&format!(".SH \"{}\"\n", escape(&title.to_uppercase())));
                in_banner = false;
                comment.clear();
            }
        } else if let Some((key, _)) = setting(line) {
            s.push_str(&format!(".TP\n\\fB{}\\fR\n", escape(key)));
            // Paragraphs inside a .TP entry keep its indentation with .IP.
            s.push_str(&comment_text(&comment, ".IP\n"));
            s.push_str(&format!(
                ".RS\n.PP\nIn the sample file:\n.nf\n.RS\n{}\n.RE\n.fi\n.RE\n",
                escape(line.trim_start_matches('#'))
            ));
            comment.clear();
        } else if let Some(c) = line.strip_prefix('#') {
            comment.push(c);
        } else if line.trim().is_empty() && !comment.is_empty() {
            comment.push("");
        }
    }
    s.push_str(&see_also(&[
        "virtlockd(8)",
        "virtlockctl(1)",
        "virt-admin(1)",
    ]));
    s
}

/// A commented-out setting of the sample: `#name = value` (no space after '#').
pub fn setting(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim_end();
    let valid = key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid.then_some((key, value.trim()))
}

/// Comment lines as roff: blank lines start paragraphs, lines indented more
/// than the usual single space are kept as they are (formats, lists).
fn comment_text(lines: &[&str], paragraph: &str) -> String {
    let mut s = String::new();
    let mut verbatim = false;
    let mut pending_paragraph = false;
    for line in lines {
        let indented = line.starts_with("  ");
        if line.trim().is_empty() {
            if verbatim {
                s.push_str(".fi\n");
                verbatim = false;
            }
            pending_paragraph = !s.is_empty();
            continue;
        }
        if pending_paragraph {
            s.push_str(paragraph);
            pending_paragraph = false;
        }
        if indented && !verbatim {
            s.push_str(".nf\n");
            verbatim = true;
        } else if !indented && verbatim {
            s.push_str(".fi\n");
            verbatim = false;
        }
        s.push_str(&escape(if verbatim { line } else { line.trim() }));
        s.push('\n');
    }
    if verbatim {
        s.push_str(".fi\n");
    }
    s
}

fn text(t: &str) -> String {
    let mut s = String::new();
    for line in t.lines() {
        s.push_str(&escape(line.trim()));
        s.push('\n');
    }
    s
}

fn see_also(pages: &[&str]) -> String {
    let refs: Vec<String> = pages
        .iter()
        .map(|p| match p.split_once('(') {
            Some((name, section)) => format!("\\fB{}\\fR({}", escape(name), section),
            None => escape(p),
        })
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(",\n"))
}

/// Escapes text for roff: backslashes, hyphens (so they stay ASCII hyphens
/// that can be searched and copied) and a control character at line start.
fn escape(t: &str) -> String {
    let s = t.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}
