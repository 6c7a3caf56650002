//! An endpoint killed under keep-alive load: with health checks, outlier detection and a retry
//! policy, only requests in flight to it at that moment may fail (here, retried: none should),
//! and none fails once it is out of rotation.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::client::HttpClient;
use support::gateway::{TestGateway, simple_config};
use support::upstream::HttpUpstream;

/// An HTTP/1.1 keep-alive endpoint that can be killed: its listener closes and every open
/// connection is reset.
struct Victim {
    addr: SocketAddr,
    killed: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
}

impl Victim {
    fn start() -> Victim {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let killed = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (k, s) = (killed.clone(), served.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !k.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let (k, s) = (k.clone(), s.clone());
                thread::spawn(move || serve(conn, &k, &s));
            }
            // The listener closes here: new connections are refused.
        });
        Victim {
            addr,
            killed,
            served,
        }
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

/// Answers GETs with `200 victim` until killed, then resets the connection.
fn serve(mut conn: TcpStream, killed: &AtomicBool, served: &AtomicUsize) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if killed.load(Ordering::SeqCst) {
            let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
            return;
        }
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            served.fetch_add(1, Ordering::SeqCst);
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nvictim";
            if conn.write_all(reply).is_err() {
                return;
            }
        }
    }
}

#[test]
fn killing_an_endpoint_under_load_fails_no_request_after_it_is_out() {
    let good = HttpUpstream::builder().start();
    let victim = Victim::start();
    let extra = "    health_check: { tcp: {}, interval: 100ms, timeout: 50ms, unhealthy_threshold: 1 }
    outlier_detection: { consecutive_gateway_failure: 1, base_ejection_time: 5s, max_ejection_percent: 50 }";
    let yaml = simple_config(&[(good.addr(), 1), (victim.addr, 1)], 2, extra, "{}").replace(
        "route: { cluster: backend }",
        "route: { cluster: backend, retry_policy: { retry_on: [reset, gateway-error], num_retries: 1 } }",
    );
    let gw = TestGateway::start(&yaml);
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let ok = Arc::new(AtomicUsize::new(0));
    // 8 keep-alive clients, each bounded in count and time.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, failures, ok, addr) = (stop.clone(), failures.clone(), ok.clone(), gw.addr);
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut client = HttpClient::connect(addr).ok();
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        return;
                    }
                    let got = match client.as_mut() {
                        Some(c) => c.get("/", "a.test"),
                        None => Err("no connection".to_owned()),
                    };
                    match got {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            failures.lock().unwrap().push(Instant::now());
                            client = HttpClient::connect(addr).ok();
                        }
                    }
                }
            })
        })
        .collect();
    // Load on both endpoints, then the kill.
    let deadline = Instant::now() + Duration::from_secs(5);
    while victim.served.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "the victim got no load");
        thread::sleep(Duration::from_millis(5));
    }
    let killed_at = Instant::now();
    victim.kill();
    let before = ok.load(Ordering::SeqCst);
    // Until well after it is out of rotation.
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client");
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.len() <= 8,
        "at most the requests in flight to it fail: {} failed",
        failures.len()
    );
    let late: Vec<_> = failures
        .iter()
        .filter(|&&t| t > killed_at + Duration::from_millis(500))
        .collect();
    assert!(late.is_empty(), "{} failures after it was out", late.len());
    assert!(ok.load(Ordering::SeqCst) > before + 100, "the load went on");
}
