//! The `tokengate` binary as a child process.

use std::sync::{Arc, Mutex};

/// A child process's stderr, read line by line on a thread, so that every wait for a
/// line has a deadline: a child that hangs fails the test instead of hanging the suite.
pub struct ChildLines {
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildLines {
    /// Takes the child's piped stderr.
    pub fn of(child: &mut std::process::Child) -> ChildLines {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ChildLines { lines }
    }

    /// The next line; `None` once the child closed stderr. Panics, naming `what` was
    /// awaited, when no line comes by `deadline`.
    pub fn next_by(&self, deadline: std::time::Instant, what: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("no line from the child in time while waiting for {what}")
            }
        }
    }

    /// Keeps every further line in `sink` (so the child never blocks on a full pipe).
    pub fn drain_into(self, sink: Arc<Mutex<Vec<String>>>) {
        std::thread::spawn(move || {
            for line in self.lines {
                sink.lock().unwrap().push(line);
            }
        });
    }
}
