//! The terminal side of [`crate::progress`]: indicatif bars under one `MultiProgress`, or plain
//! log lines with `--quiet`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{Progress, Task};

pub struct Bars {
    multi: MultiProgress,
    quiet: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Self { multi, quiet }
    }
}

impl Progress for Bars {
    fn task(&self, label: &str, total: Option<u64>, unit: &str) -> Box<dyn Task> {
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::new(n),
                format!(
                    "{{spinner}} {label} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} \
                     ({{per_sec}}, eta {{eta}}) {{msg}}"
                ),
            ),
            None => (
                ProgressBar::new_spinner(),
                format!("{{spinner}} {label}: {{pos}} {unit} ({{per_sec}}) {{msg}}"),
            ),
        };
        // Braces in a label would be read as template keys: fall back to the plain style.
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Box::new(Bar(self.multi.add(bar)))
    }

    fn log(&self, line: &str) {
        // Hidden bars (--quiet, or stderr not a terminal) would swallow the line.
        if self.quiet || self.multi.is_hidden() || self.multi.println(line).is_err() {
            eprintln!("{line}");
        }
    }
}

struct Bar(ProgressBar);

impl Task for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n)
    }
    fn set_position(&self, n: u64) {
        self.0.set_position(n)
    }
    fn set_length(&self, n: u64) {
        self.0.set_length(n)
    }
    fn set_message(&self, msg: String) {
        self.0.set_message(msg)
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
