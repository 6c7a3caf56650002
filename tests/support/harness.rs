//! Test-side plumbing shared by the end-to-end suites: short timeouts, assertions on raw
//! exchanges, process memory (VmRSS / VmHWM), CPU pinning from /proc, temporary config files,
//! a child-process guard and a one-shot gate for scripted upstreams.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::client::{ParsedResponse, RawClient, RawResponse, raw_exchange};

/// Bound for one exchange with the gateway in these tests: far above what loopback needs, well
/// below the support code's 10 s default so that a hung test fails fast.
pub const T: Duration = Duration::from_secs(5);

/// Locks `m`, ignoring poisoning (a failed test must not cascade into the others).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Raw exchanges
// ---------------------------------------------------------------------------------------------

/// Sends `request` on a fresh keep-alive connection and reads one response; returns it with the
/// client (for follow-up requests) and how long the response took.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> (ParsedResponse, RawClient, Duration) {
    let mut client = RawClient::connect(addr);
    let started = Instant::now();
    client.send(request);
    let response = client.read_response(T);
    (response, client, started.elapsed())
}

/// Sends `request` on a fresh connection and asserts the gateway answered exactly one response
/// with `status` and then closed the connection. Returns that response.
pub fn expect_status_and_close(addr: SocketAddr, request: &[u8], status: u16) -> ParsedResponse {
    let got = raw_exchange(addr, request, T);
    let what = String::from_utf8_lossy(request);
    assert!(
        got.closed,
        "the gateway must close the connection after {status} for {what:?}; got (open): {:?}",
        got.text()
    );
    let responses = got.try_responses().unwrap_or_else(|e| {
        panic!(
            "unparseable answer to {what:?}: {e}; bytes: {:?}",
            got.text()
        )
    });
    assert_eq!(
        responses.len(),
        1,
        "exactly one response to {what:?}; bytes: {:?}",
        got.text()
    );
    let r = responses.into_iter().next().expect("one response");
    assert_eq!(
        r.status,
        status,
        "status for {what:?}; bytes: {:?}",
        got.text()
    );
    assert!(r.complete, "incomplete {status} for {what:?}");
    r
}

/// Asserts that `got` (the whole exchange of one request) holds no complete response with
/// status 2xx and that the connection was closed or reset: a truncated body is never passed
/// off as complete.
pub fn assert_no_complete_success(got: &RawResponse, what: &str) {
    assert!(
        got.closed,
        "{what}: the client connection must be closed; it stayed open with {:?}",
        got.text()
    );
    if let Ok(responses) = got.try_responses() {
        for r in responses {
            assert!(
                !(r.complete && (200..300).contains(&r.status)),
                "{what}: the client got a complete {} response: {:?}",
                r.status,
                got.text()
            );
        }
    }
}

/// Reads from `client` until its buffered bytes contain `needle` (true), or the connection
/// closes or `timeout` passes (false). The bytes stay buffered for the next read.
pub fn read_until(client: &mut RawClient, needle: &[u8], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if client.leftover().windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // is_closed() keeps what it reads; a short slice lets us look at it again soon.
        if client.is_closed((deadline - now).min(Duration::from_millis(20))) {
            return client.leftover().windows(needle.len()).any(|w| w == needle);
        }
    }
}

/// Polls until a TCP connect to `addr` succeeds (true) or `timeout` passes (false).
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// An upload that may block
// ---------------------------------------------------------------------------------------------

/// A client that writes a request head and `len` body bytes from a thread of its own (the
/// writes may block while nobody reads them), while the test reads the answer.
pub struct Upload {
    stream: TcpStream,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Upload {
    pub fn start(addr: SocketAddr, head: String, len: usize) -> Upload {
        let stream = TcpStream::connect(addr).expect("Upload: connect");
        stream.set_read_timeout(Some(T)).expect("Upload: timeout");
        let mut writer = stream.try_clone().expect("Upload: clone");
        writer.set_write_timeout(Some(T)).expect("Upload: timeout");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            if writer.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b'u'; len.min(1 << 20)];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                if writer.write_all(&chunk[..n]).is_err() {
                    return;
                }
                left -= n;
            }
        });
        Upload {
            stream,
            writer: Some(writer),
        }
    }

    /// The response head, up to its empty line (less if the connection closes first).
    pub fn response_head(&mut self) -> String {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match (&self.stream).read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A one-shot gate for RawUpstream scripts
// ---------------------------------------------------------------------------------------------

/// Opened once by the test, waited on by a script thread (bounded).
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        *lock(&self.0.0) = true;
        self.0.1.notify_all();
    }

    /// True once opened; false if `timeout` passed first.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut open = lock(&self.0.0);
        while !*open {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            open = self
                .0
                .1
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// /proc: memory and CPU affinity
// ---------------------------------------------------------------------------------------------

/// A `kB` field of a /proc status file, in bytes.
fn status_kb(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resident memory of this process (the gateway runs in it), in bytes.
pub fn vm_rss() -> u64 {
    status_kb("/proc/self/status", "VmRSS:").expect("VmRSS in /proc/self/status")
}

/// Measures how far this process's resident memory rises above its level at `start()`.
///
/// Uses the kernel's peak (VmHWM), reset at start through /proc/self/clear_refs, so that a
/// buffer that was allocated and freed in between still counts; where the reset is not allowed,
/// a thread samples VmRSS every millisecond instead.
pub struct MemoryWatch {
    base: u64,
    hwm: bool,
    sampled_peak: Arc<AtomicUsize>,
    stop: Arc<Mutex<bool>>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl MemoryWatch {
    pub fn start() -> MemoryWatch {
        let hwm = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let base = vm_rss();
        let sampled_peak = Arc::new(AtomicUsize::new(base as usize));
        let stop = Arc::new(Mutex::new(false));
        let sampler = (!hwm).then(|| {
            let (peak, stop) = (sampled_peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !*lock(&stop) {
                    peak.fetch_max(vm_rss() as usize, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        });
        MemoryWatch {
            base,
            hwm,
            sampled_peak,
            stop,
            sampler,
        }
    }

    /// Peak resident memory since `start()` minus the resident memory at `start()`.
    pub fn growth(&mut self) -> u64 {
        let peak = if self.hwm {
            status_kb("/proc/self/status", "VmHWM:").expect("VmHWM in /proc/self/status")
        } else {
            *lock(&self.stop) = true;
            if let Some(t) = self.sampler.take() {
                let _ = t.join();
            }
            self.sampled_peak.load(Ordering::Relaxed) as u64
        };
        peak.saturating_sub(self.base)
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        *lock(&self.stop) = true;
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
    }
}

/// `Cpus_allowed_list` of one thread of this process, e.g. "0" or "0-1".
pub fn thread_cpus_allowed(tid: u64) -> String {
    let path = format!("/proc/self/task/{tid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {path}"))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Files and child processes
// ---------------------------------------------------------------------------------------------

/// A file in the temporary directory, removed when dropped.
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `contents` to a fresh file whose name ends with `name`.
    pub fn new(name: &str, contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("coregate-e2e-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills (SIGKILL) and reaps its child when dropped, including when a test panics.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// The exit status if the child has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
