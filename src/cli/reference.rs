//! The flag reference under `docs/reference/`, rendered from the clap definitions of both
//! binaries so it cannot drift from `--help`. A unit test compares the committed files with
//! what this module renders; `EXEMPLAR_BLESS=1 cargo test --release --lib cli::reference`
//! rewrites them.

use clap::{Arg, ArgAction, Command, CommandFactory};
use std::fmt::Write;

/// The command that regenerates the committed reference (printed by the test when it fails).
pub const REGENERATE: &str = "EXEMPLAR_BLESS=1 cargo test --release --lib cli::reference";

/// Each binary's clap command and the file, relative to the crate root, that documents it.
pub fn binaries() -> Vec<(Command, &'static str)> {
    vec![
        (super::EmbedCli::command(), "docs/reference/embed.md"),
        (
            super::solve::SolveArgs::command(),
            "docs/reference/solve.md",
        ),
    ]
}

/// Markdown for one binary: its description, then every (sub)command with its usage and flags.
pub fn render(mut cmd: Command) -> String {
    cmd.build();
    let mut commands = Vec::new();
    collect(&cmd, &mut commands);
    let name = cmd.get_name().to_string();
    let mut out = format!("# `{name}` flag reference\n\n");
    let _ = writeln!(
        out,
        "<!-- Generated from the clap definitions by src/cli/reference.rs: do not edit by hand. \
         Regenerate with `{REGENERATE}`. -->\n"
    );
    for c in &commands {
        render_command(c, &cmd, &mut out);
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The command and all its descendants, depth first.
fn collect(cmd: &Command, into: &mut Vec<Command>) {
    into.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            collect(sub, into);
        }
    }
}

/// A command that takes flags rather than subcommands (clap adds a `help` subcommand to parents).
fn is_leaf(cmd: &Command) -> bool {
    cmd.get_subcommands().all(|s| s.get_name() == "help")
}

/// GitHub's heading anchor for a heading made of `text` in backticks.
fn anchor(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn render_command(cmd: &Command, root: &Command, out: &mut String) {
    let path = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_string();
    if path != root.get_name() {
        let _ = writeln!(out, "## `{path}`\n");
    }
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{}\n", sentence(prose(&about.to_string())));
    }
    if !is_leaf(cmd) {
        // A table of contents: one link per subcommand, nested as on the command line.
        for sub in cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help" && !s.is_hide_set())
        {
            let sub_path = format!("{path} {}", sub.get_name());
            let _ = writeln!(out, "- [`{sub_path}`](#{})", anchor(&sub_path));
        }
        out.push('\n');
        // A command that also runs without a subcommand (`solve`) has flags of its own.
        if !cmd.get_arguments().any(shown) {
            return;
        }
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let _ = writeln!(out, "```text\n{usage}\n```\n");
    for arg in cmd.get_arguments().filter(|a| shown(a)) {
        let _ = writeln!(out, "{}", render_arg(arg));
    }
    out.push('\n');
}

/// `--help` and `--version` are the same everywhere; hidden flags are not for users.
fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set() && !matches!(arg.get_id().as_str(), "help" | "version")
}

/// One list item: the flag as typed, its help, then required / default / values / aliases.
fn render_arg(arg: &Arg) -> String {
    let mut notes = Vec::new();
    if let Some(help) = arg.get_long_help().or(arg.get_help()) {
        notes.push(sentence(prose(&help.to_string())));
    }
    if arg.is_required_set() {
        notes.push("Required.".to_string());
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| code(&v.to_string_lossy()))
        .collect();
    // A switch's `false` says nothing; a hidden default is explained in the help text.
    let switch = !arg.get_action().takes_values();
    if !defaults.is_empty() && !switch && !arg.is_hide_default_value_set() {
        notes.push(format!("Default: {}.", defaults.join(", ")));
    }
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| code(v.get_name()))
        .collect();
    if !values.is_empty() && !switch {
        notes.push(format!("Values: {}.", values.join(", ")));
    }
    if let Some(aliases) = arg.get_visible_aliases() {
        let aliases: Vec<String> = aliases.iter().map(|a| code(&format!("--{a}"))).collect();
        notes.push(format!("Alias: {}.", aliases.join(", ")));
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        notes.push(match arg.get_value_delimiter() {
            Some(d) => format!("Repeatable, or several separated by `{d}`."),
            None => "Repeatable.".to_string(),
        });
    }
    let item = format!("- **`{}`**", spelling(arg));
    if notes.is_empty() {
        item
    } else {
        format!("{item}: {}", notes.join(" "))
    }
}

/// The flag as a user types it: `--name <VALUE>`, `-k <K>`, or `<NAME>` for a positional.
fn spelling(arg: &Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|n| n.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![format!("<{}>", arg.get_id().as_str().to_uppercase())]);
    let value = value.join(" ");
    let name = match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => return value,
    };
    if arg.get_action().takes_values() {
        format!("{name} {value}")
    } else {
        name
    }
}

/// clap drops a doc comment's final period; put it back so the notes that follow read well.
fn sentence(mut text: String) -> String {
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

/// A value in backticks, with the backtick fence widened if the value holds one.
fn code(value: &str) -> String {
    if value.contains('`') {
        format!("`` {value} ``")
    } else {
        format!("`{value}`")
    }
}

/// Help text as Markdown: outside `code spans`, characters Markdown would read as markup are
/// escaped (help mentions `<input name>`, `*.safetensors`, `[default: ...]`).
fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            let n = rest.len() - rest.trim_start_matches('`').len();
            match closing_run(&rest[n..], n) {
                // A code span: copied as it is, up to the run of as many backticks that ends it.
                Some(end) => {
                    out.push_str(&rest[..2 * n + end]);
                    rest = &rest[2 * n + end..];
                }
                // Unmatched (help mentions ```python blocks): literal backticks.
                None => {
                    out.push_str(&"\\`".repeat(n));
                    rest = &rest[n..];
                }
            }
            continue;
        }
        if matches!(c, '<' | '>' | '*' | '[' | ']' | '\\' | '|') {
            out.push('\\');
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    // Paragraphs of a long help stay paragraphs; single newlines join like in `--help`.
    out.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n  ")
}

/// Byte offset in `s` of the next run of exactly `n` backticks.
fn closing_run(s: &str, n: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        if run == n {
            return Some(i);
        }
        i += run.max(1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn committed_reference_matches_the_clap_definitions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bless = std::env::var_os("EXEMPLAR_BLESS").is_some();
        let mut stale = Vec::new();
        for (cmd, rel) in binaries() {
            let want = render(cmd);
            let path = root.join(rel);
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &want).unwrap();
                continue;
            }
            if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                stale.push(rel);
            }
        }
        assert!(
            stale.is_empty(),
            "{stale:?} differ from the clap definitions (or were edited by hand); \
             regenerate with `{REGENERATE}` and commit the result"
        );
    }

    #[test]
    fn every_subcommand_and_flag_is_rendered() {
        for (cmd, _) in binaries() {
            let text = render(cmd.clone());
            let mut cmd = cmd;
            cmd.build();
            let mut all = Vec::new();
            collect(&cmd, &mut all);
            for c in all
                .iter()
                .filter(|c| is_leaf(c) || c.get_arguments().any(shown))
            {
                let path = c.get_bin_name().unwrap_or(c.get_name());
                assert!(text.contains(&format!("## `{path}`")) || c.get_name() == cmd.get_name());
                for arg in c.get_arguments().filter(|a| shown(a)) {
                    let item = format!("- **`{}`**", spelling(arg));
                    assert!(text.contains(&item), "{path}: {item} missing");
                }
            }
        }
    }

    #[test]
    fn help_text_markup_is_escaped_outside_code() {
        assert_eq!(
            prose("out/<name> of `*.rs` and *.py [x]"),
            "out/\\<name\\> of `*.rs` and \\*.py \\[x\\]"
        );
        assert_eq!(
            prose("a ```python block; `none` or `` a`b ``"),
            "a \\`\\`\\`python block; `none` or `` a`b ``"
        );
        assert_eq!(anchor("embed index build"), "embed-index-build");
        assert_eq!(code("a`b"), "`` a`b ``");
    }
}
