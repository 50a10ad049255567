//! How long work reports progress without the library knowing about terminals: stages call a
//! [`Progress`] they are given; the binaries implement it with progress bars (src/cli/progress.rs),
//! tests and embedders pass [`Silent`].

/// A sink for progress reports, shared by the threads of one job.
pub trait Progress: Send + Sync {
    /// Start a counted task (`total` items of `unit`; `None` for an open-ended count).
    fn task(&self, label: &str, total: Option<u64>, unit: &str) -> Box<dyn Task>;
    /// A line of log that must not tear the bars apart.
    fn log(&self, line: &str);
}

/// One running task; it finishes (and its bar disappears) when dropped.
pub trait Task: Send + Sync {
    fn inc(&self, n: u64);
    fn set_position(&self, n: u64);
    fn set_length(&self, n: u64);
    /// A short status after the counts, e.g. "1,234 tokens/s".
    fn set_message(&self, msg: String);
}

/// Reports nothing (logs still go to stderr: they carry information, not decoration).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

struct NoTask;

impl Task for NoTask {
    fn inc(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn set_length(&self, _: u64) {}
    fn set_message(&self, _: String) {}
}

impl Progress for Silent {
    fn task(&self, _: &str, _: Option<u64>, _: &str) -> Box<dyn Task> {
        Box::new(NoTask)
    }
    fn log(&self, line: &str) {
        eprintln!("{line}");
    }
}
