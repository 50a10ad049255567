//! The library's progress reports as Python `logging` records on the "exemplar" logger: a
//! task's start (DEBUG), its counts every 10 s (INFO) and its end (INFO, DEBUG for a task shorter
//! than that); log lines at INFO.
//! Reports come from worker threads that hold no GIL; each takes it for the one call.

use exemplar::progress::{Progress, Task};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DEBUG: i32 = 10;
pub const INFO: i32 = 20;
/// How often a running task reports its counts.
const EVERY: Duration = Duration::from_secs(10);

/// Send one record to `logging.getLogger("exemplar")`. Nothing happens while the interpreter
/// shuts down; a failing handler is Python's to report, not a reason to stop the work.
pub fn emit(level: i32, msg: &str) {
    Python::try_attach(|py| {
        let sent = py
            .import("logging")
            .and_then(|l| l.call_method1("getLogger", ("exemplar",)))
            .and_then(|l| l.call_method1("log", (level, msg)));
        if let Err(e) = sent {
            e.print(py);
        }
    });
}

pub struct LogProgress;

impl Progress for LogProgress {
    fn task(&self, label: &str, total: Option<u64>, unit: &str) -> Box<dyn Task> {
        let of = total.map_or(String::new(), |n| format!(" of {n}"));
        emit(DEBUG, &format!("{label}: started{of} {unit}"));
        Box::new(LogTask {
            label: label.to_string(),
            unit: unit.to_string(),
            total: AtomicU64::new(total.unwrap_or(0)),
            done: AtomicU64::new(0),
            start: Instant::now(),
            last: Mutex::new(Instant::now()),
            message: Mutex::new(String::new()),
        })
    }

    fn log(&self, line: &str) {
        emit(INFO, line);
    }
}

struct LogTask {
    label: String,
    unit: String,
    /// 0: open-ended.
    total: AtomicU64,
    done: AtomicU64,
    start: Instant,
    last: Mutex<Instant>,
    message: Mutex<String>,
}

impl LogTask {
    fn counts(&self) -> String {
        let (done, total) = (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        );
        let secs = self.start.elapsed().as_secs_f64();
        let of = if total > 0 {
            format!("/{total}")
        } else {
            String::new()
        };
        let msg = self.message.lock().map(|m| m.clone()).unwrap_or_default();
        format!(
            "{}: {done}{of} {} in {secs:.1} s ({:.1}/s) {msg}",
            self.label,
            self.unit,
            done as f64 / secs.max(1e-9)
        )
        .trim_end()
        .to_string()
    }

    fn maybe_report(&self) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed() >= EVERY {
            *last = Instant::now();
            drop(last);
            emit(INFO, &self.counts());
        }
    }
}

impl Task for LogTask {
    fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        self.maybe_report();
    }
    fn set_position(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
        self.maybe_report();
    }
    fn set_length(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }
    fn set_message(&self, msg: String) {
        if let Ok(mut m) = self.message.lock() {
            *m = msg;
        }
    }
}

impl Drop for LogTask {
    fn drop(&mut self) {
        // A long task's end is news; a quick one's (each small encode) is detail.
        let level = if self.start.elapsed() >= EVERY {
            INFO
        } else {
            DEBUG
        };
        emit(level, &format!("{} (done)", self.counts()));
    }
}
