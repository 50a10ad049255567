//! Running the `embed` and `solve` binaries and checking how they ended.

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn embed_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_embed"))
}

pub fn solve_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_solve"))
}

/// `embed` with these arguments; $EXEMPLAR_MODEL is removed so that no test depends on it.
pub fn embed_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(embed_bin());
    c.args(args).env_remove("EXEMPLAR_MODEL");
    c
}

pub fn embed(args: &[&str]) -> Output {
    embed_cmd(args).output().unwrap()
}

/// Run `embed`, which must succeed: (stdout, stderr).
pub fn embed_ok(args: &[&str]) -> (String, String) {
    let o = embed(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?}: {err}");
    (out, err)
}

/// Run a command that must succeed.
pub fn run_ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    ok(&o);
    o
}

/// Run a command that must fail; its stderr.
pub fn run_err(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(!o.status.success(), "unexpectedly succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert a finished run succeeded; its stderr then stdout (the log and the tables).
pub fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "failed: {err}");
    err + &String::from_utf8_lossy(&o.stdout)
}
