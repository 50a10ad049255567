//! `--launch "CMD"`: start the model server ourselves, wait until it answers, stream its log to
//! a file, and stop it on exit, including on Ctrl-C.

use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::Client;

/// The launched server, reachable from the Ctrl-C handler.
static SERVER: Mutex<Option<Child>> = Mutex::new(None);

/// Stops the server when dropped (normal exit, error, or panic unwinding).
pub struct ServerGuard;

impl Drop for ServerGuard {
    fn drop(&mut self) {
        stop_server();
    }
}

fn stop_server() {
    if let Ok(mut slot) = SERVER.lock() {
        if let Some(mut child) = slot.take() {
            // The whole process group: servers such as vLLM spawn workers of their own.
            let _ = Command::new("kill")
                .args(["-s", "TERM", "--", &format!("-{}", child.id())])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `--launch`: the command, its log file, and how long to wait for it to answer.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub command: String,
    pub log: std::path::PathBuf,
    pub timeout: Duration,
}

/// Start the server command through `sh -c` in its own process group, logging to the spec's
/// file, and wait until `client` reports it healthy (or the timeout passes, or it exits).
/// The wait ends at `end` too (the time budget).
pub fn launch(spec: &LaunchSpec, client: &Client, end: Option<Instant>) -> Result<ServerGuard> {
    let (cmd, log, timeout) = (spec.command.as_str(), spec.log.as_path(), spec.timeout);
    use std::os::unix::process::CommandExt;
    if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    *SERVER.lock().unwrap() = Some(child);
    let guard = ServerGuard;
    let _ = ctrlc::set_handler(|| {
        stop_server();
        std::process::exit(130);
    });
    eprintln!(
        "launched server (pid {pid}), log -> {}; waiting for {}/models",
        log.display(),
        client.endpoint()
    );
    let start = Instant::now();
    loop {
        let probe = super::preflight::bounded(Duration::from_secs(5), end);
        if probe.is_some_and(|t| client.healthy_within(t)) {
            eprintln!("server ready after {:.0} s", start.elapsed().as_secs_f64());
            return Ok(guard);
        }
        if let Some(status) = SERVER
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!(
                "the server exited ({status}) before it was ready; see {}",
                log.display()
            );
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            bail!(
                "the time budget ran out after {:.0} s waiting for the launched server; see {}",
                start.elapsed().as_secs_f64(),
                log.display()
            );
        }
        if start.elapsed() > timeout {
            bail!(
                "the server was not ready after {:.0} s; see {}",
                timeout.as_secs_f64(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
