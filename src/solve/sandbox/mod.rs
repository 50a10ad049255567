//! The Python sandbox behind `--tools python`: one persistent interpreter per sample (state kept
//! between calls, like a notebook), driven by `assets/sandbox/repl.py` over length-prefixed JSON
//! on stdin/stdout.
//!
//! What is isolated, layer by layer, each used only where the OS allows it and reported in
//! [`Isolation`] (and so in every trace line):
//!
//! - **time**: a wall-clock limit per call; on expiry the whole process group is killed and a
//!   fresh interpreter started (its state is lost, and the tool output says so). RLIMIT_CPU caps
//!   the CPU seconds of every process as a backstop.
//! - **memory**: RLIMIT_AS per process (a 10 GB allocation raises MemoryError).
//! - **processes**: a pids cgroup when the cgroup tree is writable (root), else RLIMIT_NPROC when
//!   it is enforced (a non-root user inside its own user namespace); as root without a cgroup
//!   nothing limits the count, and a fork bomb is only bounded by the wall clock and the kill.
//! - **network**: own user + network namespace (no interfaces but a down loopback); else Landlock
//!   denies TCP bind/connect (UDP stays open); else none.
//! - **filesystem**: Landlock allows writes only beneath the sandbox's own empty temporary
//!   directory (and /dev/null); reads are allowed wherever the user may read.
//! - **signals**: with Landlock ABI 6+ the code cannot signal processes outside the sandbox.
//! - **lifetime**: own process group (and cgroup), killed when the sandbox is dropped;
//!   PR_SET_PDEATHSIG kills the interpreter if the solver dies.
//!
//! Not isolated: reading files, the process count as root without a writable cgroup, a process
//! that leaves the group with setsid() when there is no cgroup (it still has RLIMIT_CPU), UDP
//! without a network namespace, and CPU time shared with the model server.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod isolation;
mod sys;

pub use isolation::Isolation;
use isolation::{describe, disabled, spawn_isolated};

/// Time for the interpreter to start and import numpy/sympy.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A reply larger than this is a broken protocol, not output.
const MAX_REPLY: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// The interpreter (`python3` is looked up on PATH once).
    pub python: PathBuf,
    /// Wall-clock limit of one call.
    pub timeout: Duration,
    /// RLIMIT_AS of every sandbox process.
    pub memory_bytes: u64,
    /// Processes (and threads) at most, where a limit can be enforced.
    pub max_processes: u64,
    /// Characters of output kept per call.
    pub output_chars: usize,
    /// CPU seconds of one process over its life (RLIMIT_CPU).
    pub cpu_seconds: u64,
}

/// What the interpreter reported when it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub python: String,
    pub executable: String,
    /// Versions, or None when not importable (reported, not fatal).
    pub numpy: Option<String>,
    pub sympy: Option<String>,
    pub isolation: Isolation,
}

/// One executed code block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Executed {
    /// stdout/stderr, then the value of the last expression, or the error; cut to the limit.
    pub text: String,
    /// The code raised (the traceback is in `text`), or the call was killed.
    pub error: bool,
    pub timed_out: bool,
    /// The interpreter was killed or died and a fresh one started: earlier state is gone.
    pub restarted: bool,
    pub seconds: f64,
}

static SANDBOXES: AtomicU64 = AtomicU64::new(0);

/// A running interpreter with its working directory, killed (group and cgroup) when dropped.
pub struct Sandbox {
    cfg: SandboxConfig,
    proc: Option<Proc>,
    info: SandboxInfo,
    /// Process group id of the current interpreter (= its pid).
    pub pgid: i32,
    /// Every process group this sandbox used (a restart makes a new one).
    pub pgids: Vec<i32>,
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Result<Value, String>>,
    workdir: PathBuf,
    cgroup: Option<PathBuf>,
}

impl Sandbox {
    pub fn start(cfg: &SandboxConfig) -> Result<Self> {
        let (proc, info) = Proc::start(cfg)?;
        let pgid = proc.child.id() as i32;
        Ok(Self {
            cfg: cfg.clone(),
            proc: Some(proc),
            info,
            pgid,
            pgids: vec![pgid],
        })
    }

    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// Run one code block; `cancel` abandons it (the interpreter is then killed).
    pub fn run(&mut self, code: &str, cancel: &AtomicBool) -> Executed {
        let start = Instant::now();
        let mut out = match self.proc.as_mut() {
            Some(p) => p.call(code, &self.cfg, cancel),
            None => Err(Fault::Died("the sandbox is not running".into())),
        }
        .unwrap_or_else(|f| self.recover(f));
        out.seconds = start.elapsed().as_secs_f64();
        out
    }

    /// After a timeout or a crash: kill everything, start afresh, and say what happened.
    fn recover(&mut self, fault: Fault) -> Executed {
        if let Some(p) = self.proc.take() {
            p.kill();
        }
        let (timed_out, what) = match fault {
            Fault::Timeout => (
                true,
                format!(
                    "TimeoutError: the code ran longer than {:.0} s and was killed",
                    self.cfg.timeout.as_secs_f64()
                ),
            ),
            Fault::Cancelled => {
                // The sample is over: no new interpreter.
                return Executed {
                    text: "cancelled: the sample was stopped".into(),
                    error: true,
                    ..Default::default()
                };
            }
            Fault::Died(why) => (false, format!("the Python process died: {why}")),
        };
        let restarted = match Proc::start(&self.cfg) {
            Ok((p, _)) => {
                self.pgid = p.child.id() as i32;
                self.pgids.push(self.pgid);
                self.proc = Some(p);
                "; a new interpreter was started, so earlier variables are gone"
            }
            Err(_) => "; the interpreter could not be restarted",
        };
        Executed {
            text: format!("{what}{restarted}"),
            error: true,
            timed_out,
            restarted: true,
            seconds: 0.0,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill();
        }
    }
}

enum Fault {
    Timeout,
    Cancelled,
    Died(String),
}

impl Proc {
    fn start(cfg: &SandboxConfig) -> Result<(Self, SandboxInfo)> {
        let python = resolve_python(&cfg.python)?;
        let n = SANDBOXES.fetch_add(1, Ordering::Relaxed);
        let workdir = std::env::temp_dir().join(format!(
            "exemplar-sandbox-{}-{n}-{}",
            std::process::id(),
            sys::nanos()
        ));
        std::fs::create_dir(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
        let (child, layers) = match spawn_isolated(cfg, &python, &workdir) {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&workdir);
                return Err(e);
            }
        };
        let mut proc = Proc::wrap(child, workdir)?;
        // Join the cgroup before any user code can run (the driver waits for our first call).
        proc.cgroup = match disabled("cgroup") {
            true => None,
            false => sys::pids_cgroup(proc.child.id(), cfg.max_processes),
        };
        let hello = match proc.receive(START_TIMEOUT, &AtomicBool::new(false)) {
            Ok(v) => v,
            Err(f) => {
                let why = match f {
                    Fault::Died(w) => w,
                    _ => "no hello within 60 s".into(),
                };
                let log =
                    std::fs::read_to_string(proc.workdir.join("driver.err")).unwrap_or_default();
                proc.kill();
                bail!("the Python sandbox did not start ({why}): {}", clip(&log));
            }
        };
        let info = describe(&hello, cfg, layers, proc.cgroup.is_some());
        Ok((proc, info))
    }

    fn wrap(mut child: Child, workdir: PathBuf) -> Result<Self> {
        let stdin = child.stdin.take().context("sandbox stdin")?;
        let mut stdout = child.stdout.take().context("sandbox stdout")?;
        let (tx, replies) = channel();
        // One reader per interpreter: a call waits on the channel with a timeout.
        std::thread::spawn(move || loop {
            let msg = read_frame(&mut stdout);
            let end = msg.is_err();
            if tx.send(msg).is_err() || end {
                return;
            }
        });
        Ok(Self {
            child,
            stdin,
            replies,
            workdir,
            cgroup: None,
        })
    }

    fn call(
        &mut self,
        code: &str,
        cfg: &SandboxConfig,
        cancel: &AtomicBool,
    ) -> Result<Executed, Fault> {
        // Twice the limit is captured, so the cut can keep the head and the tail.
        let req = serde_json::json!({"code": code, "max_chars": 2 * cfg.output_chars});
        let body = serde_json::to_vec(&req).map_err(|e| Fault::Died(e.to_string()))?;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.stdin
            .write_all(&frame)
            .and_then(|_| self.stdin.flush())
            .map_err(|e| Fault::Died(format!("writing to it failed: {e}")))?;
        let reply = self.receive(cfg.timeout, cancel)?;
        Ok(render(&reply, cfg.output_chars))
    }

    /// The next message, waiting at most `limit` and giving up when `cancel` is set.
    fn receive(&mut self, limit: Duration, cancel: &AtomicBool) -> Result<Value, Fault> {
        let until = Instant::now() + limit;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Fault::Cancelled);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Fault::Timeout);
            }
            match self
                .replies
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => return Err(Fault::Died(self.exit_reason(e))),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Fault::Died(self.exit_reason("no reply".into())))
                }
            }
        }
    }

    fn exit_reason(&mut self, read_error: String) -> String {
        std::thread::sleep(Duration::from_millis(20));
        match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => read_error,
        }
    }

    /// SIGKILL the process group and whatever is left in the cgroup, reap, clean up.
    fn kill(mut self) {
        let pgid = self.child.id() as i32;
        sys::kill_group(pgid);
        if let Some(cg) = &self.cgroup {
            sys::kill_cgroup(cg);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Group members that were not our children are reaped by init; wait until they are gone
        // so "the sandbox ended" means no process of it is left.
        let until = Instant::now() + Duration::from_secs(2);
        while sys::group_alive(pgid) && Instant::now() < until {
            sys::kill_group(pgid);
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(cg) = &self.cgroup {
            sys::remove_cgroup(cg);
        }
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// Tool output as the model sees it: captured output, then the last expression's value, then
/// the error; cut to `limit` characters (head and tail kept).
fn render(reply: &Value, limit: usize) -> Executed {
    let field = |k: &str| reply.get(k).and_then(Value::as_str).unwrap_or("");
    let mut text = field("output").to_string();
    for extra in [field("value"), field("error")] {
        if !extra.is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(extra);
        }
    }
    let error = !field("error").is_empty();
    let dropped = reply.get("dropped").and_then(Value::as_u64).unwrap_or(0) as usize;
    Executed {
        text: cut(text.trim_end(), limit, dropped),
        error,
        ..Default::default()
    }
}

/// At most `limit` characters: the head and the tail (where errors are) with a marker between
/// that counts what was left out (`dropped` more were never captured).
pub fn cut(text: &str, limit: usize, dropped: usize) -> String {
    let n = text.chars().count();
    if n <= limit && dropped == 0 {
        return text.to_string();
    }
    let marker = format!(
        "\n[... {} characters cut ...]\n",
        (n + dropped).saturating_sub(limit)
    );
    let keep = limit.saturating_sub(marker.len()).max(2);
    let head: String = text.chars().take(keep / 2).collect();
    let tail: String = text.chars().skip(n - (keep - keep / 2)).collect();
    format!("{head}{marker}{tail}")
}

fn read_frame(r: &mut impl Read) -> Result<Value, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| format!("reading: {e}"))?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_REPLY {
        return Err(format!("a reply of {n} bytes: the protocol is broken"));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)
        .map_err(|e| format!("reading: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("malformed reply: {e}"))
}

/// The interpreter's real path (once per name): a pyenv-style shim re-execs through bash with
/// a HOME-dependent root, so the sandbox runs the binary itself.
fn resolve_python(python: &Path) -> Result<PathBuf> {
    static CACHE: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, real)) = cache.iter().find(|(p, _)| p == python) {
        return Ok(real.clone());
    }
    let out = Command::new(python)
        .args(["-I", "-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("--python {}: cannot run it", python.display()))?;
    let real = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || real.is_empty() {
        bail!(
            "--python {}: did not report its executable: {}",
            python.display(),
            clip(&String::from_utf8_lossy(&out.stderr))
        );
    }
    cache.push((python.to_path_buf(), PathBuf::from(&real)));
    Ok(PathBuf::from(real))
}

/// What the interpreter and its isolation look like here, starting one sandbox (and then
/// dropping it); used once per run for the log and the traces.
pub fn probe(cfg: &SandboxConfig) -> Result<SandboxInfo> {
    static INFO: OnceLock<SandboxInfo> = OnceLock::new();
    if let Some(i) = INFO.get() {
        return Ok(i.clone());
    }
    let sb = Sandbox::start(cfg)?;
    Ok(INFO.get_or_init(|| sb.info().clone()).clone())
}

fn clip(s: &str) -> String {
    let s = s.trim();
    let n = s.chars().count();
    match n > 600 {
        true => s.chars().skip(n - 600).collect(),
        false => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SandboxConfig {
        SandboxConfig {
            python: "python3".into(),
            timeout: Duration::from_secs(3),
            memory_bytes: 2 << 30,
            max_processes: 32,
            output_chars: 2000,
            cpu_seconds: 60,
        }
    }

    #[test]
    fn state_persists_and_errors_and_timeouts_are_reported() {
        let mut sb = Sandbox::start(&cfg()).unwrap();
        eprintln!("{:#?}", sb.info());
        let no = AtomicBool::new(false);
        let r = sb.run("x = 41\nx", &no);
        assert_eq!(r.text, "41");
        let r = sb.run("print(x + 1)", &no);
        assert_eq!(r.text, "42");
        let r = sb.run("1/0", &no);
        assert!(r.error && r.text.contains("ZeroDivisionError"), "{r:?}");
        let r = sb.run("while True: pass", &no);
        assert!(r.timed_out && r.restarted, "{r:?}");
        let r = sb.run("print('x' in globals())", &no);
        assert_eq!(r.text, "False");
        let pgids = sb.pgids.clone();
        drop(sb);
        for g in pgids {
            assert!(!sys::group_alive(g));
        }
    }
}
