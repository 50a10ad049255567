//! The isolation layers of the sandbox (see the list in mod.rs): which of them start on this
//! machine (probed once per process, strongest first), spawning the interpreter inside them,
//! and what they isolate, in words for the log and the traces.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::{sys, SandboxConfig, SandboxInfo};

/// The REPL driver, embedded so the binary needs nothing beside a Python interpreter.
const DRIVER: &str = include_str!("../../../assets/sandbox/repl.py");

/// What the sandbox isolates here, in words and as flags a test can check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Isolation {
    pub network: String,
    pub filesystem: String,
    pub processes: String,
    pub memory: String,
    pub time: String,
    pub signals: String,
    pub network_isolated: bool,
    pub filesystem_isolated: bool,
    pub processes_limited: bool,
}

/// Which isolation layers spawn successfully on this machine; probed once per process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Layers {
    /// 2: user + network namespace; 1: network namespace only; 0: none.
    namespaces: u8,
    landlock: bool,
}

static LAYERS: Mutex<Option<Layers>> = Mutex::new(None);

/// `EXEMPLAR_SANDBOX_DISABLE=namespaces,landlock,cgroup` leaves layers out: to see how the
/// sandbox behaves (and reports itself) where the OS refuses them, and to debug one that will
/// not start.
pub(super) fn disabled(layer: &str) -> bool {
    std::env::var("EXEMPLAR_SANDBOX_DISABLE").is_ok_and(|v| v.split(',').any(|l| l.trim() == layer))
}

/// Spawn the driver with the strongest layers this machine allows; the first combination that
/// starts is remembered for the rest of the process.
pub(super) fn spawn_isolated(
    cfg: &SandboxConfig,
    python: &Path,
    workdir: &Path,
) -> Result<(Child, Layers)> {
    let mut known = LAYERS.lock().unwrap_or_else(|e| e.into_inner());
    let candidates: Vec<Layers> = match *known {
        Some(l) => vec![l],
        None => [2u8, 1, 0]
            .iter()
            .flat_map(|&namespaces| {
                [true, false].map(|landlock| Layers {
                    namespaces,
                    landlock,
                })
            })
            .filter(|l| !(disabled("namespaces") && l.namespaces > 0))
            .filter(|l| !(disabled("landlock") && l.landlock))
            .collect(),
    };
    let mut first_error = None;
    for layers in candidates {
        match spawn(cfg, python, workdir, layers) {
            Ok(child) => {
                *known = Some(layers);
                return Ok((child, layers));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| anyhow::anyhow!("no way to start the sandbox")))
        .with_context(|| format!("starting the Python sandbox ({})", python.display()))
}

fn spawn(cfg: &SandboxConfig, python: &Path, workdir: &Path, layers: Layers) -> Result<Child> {
    let ruleset: Option<OwnedFd> = match layers.landlock {
        true => Some(sys::landlock_ruleset(workdir).context("Landlock")?),
        false => None,
    };
    let err = std::fs::File::create(workdir.join("driver.err"))?;
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-B", "-c", DRIVER])
        .current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", workdir)
        .env("TMPDIR", workdir)
        .env("LANG", "C.UTF-8")
        // One thread per math library: threads count as processes and share the CPU.
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .process_group(0);
    let limits = sys::Limits {
        memory_bytes: cfg.memory_bytes,
        cpu_seconds: cfg.cpu_seconds,
        max_processes: cfg.max_processes,
        file_bytes: 256 << 20,
    };
    let ns = layers.namespaces;
    let fd = ruleset.as_ref().map_or(-1, |f| f.as_raw_fd());
    // SAFETY: pre_exec's closure runs in the forked child before exec, where only
    // async-signal-safe work is sound. `confine` only makes raw system calls (setrlimit,
    // unshare, prctl, landlock_restrict_self) on the `Copy` data moved into the closure: no
    // allocation (its errors are `io::Error::last_os_error()`, an OS code), no locks, no
    // unwinding. `fd` stays open in the parent until `spawn` has returned.
    unsafe {
        cmd.pre_exec(move || sys::confine(&limits, ns, fd));
    }
    let child = cmd.spawn()?;
    drop(ruleset);
    Ok(child)
}

/// Isolation in words, from the layers that started and what the interpreter saw.
pub(super) fn describe(
    hello: &Value,
    cfg: &SandboxConfig,
    layers: Layers,
    cgroup: bool,
) -> SandboxInfo {
    let s = |k: &str| hello.get(k).and_then(Value::as_str).map(str::to_string);
    let interfaces: Vec<String> = hello
        .get("interfaces")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let abi = if layers.landlock {
        sys::landlock_abi()
    } else {
        0
    };
    let mut iso = Isolation::default();
    (iso.network, iso.network_isolated) = network(layers, abi, &interfaces);
    (iso.filesystem, iso.filesystem_isolated) = filesystem(abi);
    (iso.processes, iso.processes_limited) = processes(cfg, layers, cgroup);
    iso.memory = format!(
        "{} MiB of address space per process (RLIMIT_AS)",
        cfg.memory_bytes >> 20
    );
    iso.time = format!(
        "{:.0} s wall clock per call (then the process group is killed and a new interpreter \
         started); {} CPU seconds per process (RLIMIT_CPU)",
        cfg.timeout.as_secs_f64(),
        cfg.cpu_seconds
    );
    iso.signals = match abi >= 6 {
        true => "cannot signal processes outside the sandbox (Landlock scope)".into(),
        false => "may signal other processes of the same user".into(),
    };
    SandboxInfo {
        python: s("python").unwrap_or_default(),
        executable: s("executable").unwrap_or_default(),
        numpy: s("numpy"),
        sympy: s("sympy"),
        isolation: iso,
    }
}

/// A network namespace counts only if the interpreter indeed sees no interface but `lo`.
fn network(layers: Layers, abi: u32, interfaces: &[String]) -> (String, bool) {
    let only_loopback = interfaces.iter().all(|i| i == "lo");
    match (layers.namespaces, abi >= 4) {
        (1 | 2, _) if only_loopback => (
            "isolated: own network namespace (only a loopback that is down)".into(),
            true,
        ),
        (_, true) => (
            "partly isolated: Landlock denies TCP bind and connect; UDP and other sockets are \
             not blocked (no network namespace could be created)"
                .into(),
            true,
        ),
        _ => (
            "NOT isolated: neither a network namespace nor Landlock's network rules are \
             available here"
                .into(),
            false,
        ),
    }
}

fn filesystem(abi: u32) -> (String, bool) {
    match abi {
        0 => (
            "NOT isolated: no Landlock; the code can write wherever the user can (its working \
             directory is an empty temporary folder)"
                .into(),
            false,
        ),
        v => (
            format!(
                "writes only beneath its own temporary working directory and to /dev/null \
                 (Landlock ABI {v}); reads wherever the user may read"
            ),
            true,
        ),
    }
}

fn processes(cfg: &SandboxConfig, layers: Layers, cgroup: bool) -> (String, bool) {
    let n = cfg.max_processes;
    if cgroup {
        return (
            format!("at most {n} processes and threads (pids cgroup)"),
            true,
        );
    }
    if sys::is_root() {
        return (
            "NOT limited: running as root without a writable pids cgroup, and RLIMIT_NPROC is \
             not enforced for root; a fork bomb is bounded only by the wall-clock limit and the \
             process-group kill"
                .into(),
            false,
        );
    }
    match layers.namespaces {
        2 => (
            format!("at most {n} processes and threads (RLIMIT_NPROC in its own user namespace)"),
            true,
        ),
        _ => (
            "NOT limited: RLIMIT_NPROC would count all of the user's processes without a user \
             namespace, so it is not set; bounded by the wall-clock limit and the kill"
                .into(),
            false,
        ),
    }
}
