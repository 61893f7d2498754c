// SPDX-License-Identifier: GPL-2.0-only

//! Progress lines on stderr, only when stderr is a terminal.

use std::io::IsTerminal;
use std::io::Write;
use std::time::Duration;
use std::time::Instant;

/// How often the progress line is redrawn at most.
const INTERVAL: Duration = Duration::from_millis(200);

/// A progress line: `"<label>: <done>/<total> <unit>"` redrawn in place on
/// stderr. Silent unless stderr is a terminal (so logs and test output
/// never see it).
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    unit: &'static str,
    total: Option<u64>,
    enabled: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// A progress line counting `unit`s up to `total` (if known), enabled
    /// when stderr is a terminal.
    pub fn new(label: &'static str, unit: &'static str, total: Option<u64>) -> Self {
        Self::with_enabled(label, unit, total, std::io::stderr().is_terminal())
    }

    /// A progress line that never prints.
    pub fn silent() -> Self {
        Self::with_enabled("", "", None, false)
    }

    fn with_enabled(
        label: &'static str,
        unit: &'static str,
        total: Option<u64>,
        enabled: bool,
    ) -> Self {
        Self {
            label,
            unit,
            total,
            enabled,
            last: None,
            drawn: false,
        }
    }

    /// Starts counting again with a new label, unit and total.
    pub fn restart(&mut self, label: &'static str, unit: &'static str, total: Option<u64>) {
        self.finish();
        self.label = label;
        self.unit = unit;
        self.total = total;
        self.last = None;
    }

    /// Reports `done` units; redraws at most every 200 ms.
    pub fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            return;
        }
        self.last = Some(now);
        let line = match self.total {
            Some(total) if total > 0 => {
                let pct = done.saturating_mul(100) / total;
                format!("{}: {done}/{total} {} ({pct}%)", self.label, self.unit)
            }
            _ => format!("{}: {done} {}", self.label, self.unit),
        };
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a failed write to the terminal is ignored.
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the progress line, if one was drawn.
    pub fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
