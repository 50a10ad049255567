//! A real OpenAI-compatible server: llama.cpp's llama-server serving SmolLM2-135M-Instruct
//! (Q4_1 GGUF), both installed by scripts/fetch-llama-server.sh. Tests fail (rather than skip)
//! when they are missing: CI installs them, and a skipped test of the real-server path proves
//! nothing.

use super::cache;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A llama-server on a free port, stopped when dropped.
pub struct LlamaServer {
    child: Child,
    root: String,
}

impl LlamaServer {
    /// `ctx` tokens of context shared by `parallel` slots; `extra` server flags.
    pub fn start(ctx: usize, parallel: usize, extra: &[&str]) -> Self {
        let bin = cache().join("llama-server/bin/llama-server");
        let gguf = cache().join("models/smollm2-135m-gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            bin.is_file() && gguf.is_file(),
            "llama-server or the SmolLM2 GGUF is not installed under {}: run \
             scripts/fetch-llama-server.sh",
            cache().display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["-m", gguf.to_str().unwrap(), "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "-c", &ctx.to_string()])
            // One thread, passive waiting: two spinning OpenMP threads slow down tenfold when
            // the tests share the cores (measured; tests/fixtures/llama-server/NOTES.md).
            .args(["-np", &parallel.to_string(), "-t", "1", "--no-webui"])
            .env("OMP_WAIT_POLICY", "passive")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            root: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while get(&format!("{}/health", server.root)).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "llama-server did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("{}/v1", self.root)
    }

    /// Slots generating right now (from /slots).
    pub fn busy_slots(&self) -> usize {
        get(&format!("{}/slots", self.root))
            .and_then(|v| v.as_array().cloned())
            .map_or(0, |s| {
                s.iter().filter(|s| s["is_processing"] == true).count()
            })
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a JSON document, None unless it answers 200.
fn get(url: &str) -> Option<serde_json::Value> {
    let resp = ureq::get(url).call().ok()?;
    if resp.status().as_u16() != 200 {
        return None;
    }
    serde_json::from_str(&resp.into_body().read_to_string().ok()?).ok()
}
