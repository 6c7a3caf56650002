//! Runs the built `coregate` binary as a child process for signal tests: its config file, its
//! log lines as they come (stderr), signals, and a kill on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The log lines of a child, each with the time it was read.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<(Instant, String)>>,
    more: Condvar,
}

/// A running `coregate run -c FILE`.
pub struct Coregate {
    child: Child,
    pub config: PathBuf,
    lines: Arc<Lines>,
}

/// A fresh path for a config file in the temp directory.
pub fn temp_config(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::env::temp_dir().join(format!("coregate-{}-{tag}-{n}.yaml", std::process::id()))
}

impl Coregate {
    /// Writes `yaml` to a new file and starts the binary on it; returns once it listens.
    pub fn start(yaml: &str) -> Coregate {
        Coregate::spawn(yaml, Command::new(env!("CARGO_BIN_EXE_coregate")))
    }

    /// Like [`start`](Coregate::start), with the process's open-file limit at `nofile`
    /// (through util-linux's `prlimit`, which then runs the binary in its place).
    pub fn start_with_fd_limit(yaml: &str, nofile: u32) -> Coregate {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_coregate"));
        Coregate::spawn(yaml, command)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(yaml: &str, mut command: Command) -> Coregate {
        let config = temp_config("run");
        std::fs::write(&config, yaml).expect("write config");
        let mut child = command
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coregate");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lines.lock().unwrap().push((Instant::now(), line));
                sink.more.notify_all();
            }
        });
        let c = Coregate {
            child,
            config,
            lines,
        };
        c.wait_for("listening", Duration::from_secs(10));
        c
    }

    /// The address a listener was bound to, from the startup log.
    pub fn listener(&self, name: &str) -> SocketAddr {
        let line = self.wait_for(&format!("listener={name} "), Duration::from_secs(10));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        addr.parse().expect("listener address")
    }

    /// The first log line containing `needle` (waiting for it at most `timeout`).
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_nth(needle, 1, timeout).1
    }

    /// The `n`th log line containing `needle`, with the time it was read.
    pub fn wait_for_nth(&self, needle: &str, n: usize, timeout: Duration) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lines.lock().unwrap();
        loop {
            if let Some(found) = lines.iter().filter(|(_, l)| l.contains(needle)).nth(n - 1) {
                return found.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
                panic!(
                    "no log line #{n} with {needle:?} within {timeout:?}; log:\n{}",
                    all.join("\n")
                );
            }
            lines = self
                .lines
                .more
                .wait_timeout(lines, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.lines
            .lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our live child's.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal})");
    }

    /// Replaces the config by writing a new file and renaming it over the old one, as editors
    /// and config managers do.
    pub fn replace_config(&self, yaml: &str) {
        let next = temp_config("next");
        std::fs::write(&next, yaml).expect("write config");
        std::fs::rename(&next, &self.config).expect("rename config");
    }

    /// Rewrites the config file in place.
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("write config");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Coregate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
