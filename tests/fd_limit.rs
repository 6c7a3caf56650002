//! A connection flood against a process with few file descriptors: the gateway refuses what
//! it cannot hold by closing it at once (a reserve descriptor per core), does not spin while
//! descriptors are short, and serves again as soon as they come back.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::raw_exchange;
use support::gateway::CatchAll;
use support::harness::T;
use support::process::Coregate;
use support::upstream::HttpUpstream;

/// The process's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ: the kernel reports these in hundredths of a second on every architecture.
    let hz = 100;
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn a_flood_past_the_fd_limit_is_refused_cleanly_and_the_gateway_recovers() {
    let up = HttpUpstream::builder().start();
    let yaml = CatchAll::new(up.addr())
        .top("limits: { header_timeout: 30s }\n")
        .yaml();
    let gw = Coregate::start_with_fd_limit(&yaml, 64);
    let addr = gw.listener("main");
    // Bounded: 120 connections, more than the process can hold.
    let mut flood: Vec<TcpStream> = (0..120)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    gw.wait_for("accept failed", Duration::from_secs(10));
    // The refused ones are closed by the gateway at once; the others stay open (waiting for a
    // request head): poll them all, briefly each, until some close.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = vec![false; flood.len()];
    while !closed.iter().any(|&c| c) && Instant::now() < deadline {
        for (conn, closed) in flood.iter_mut().zip(closed.iter_mut()) {
            if *closed {
                continue;
            }
            conn.set_read_timeout(Some(Duration::from_millis(5))).ok();
            let mut byte = [0u8; 1];
            *closed = match conn.read(&mut byte) {
                Ok(0) => true,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                Ok(_) => false,
            };
        }
    }
    let refused = closed.iter().filter(|&&c| c).count();
    assert!(refused > 0, "some connections were refused by a close");
    // While descriptors are short, the accept loop pauses instead of spinning.
    let before = cpu_time(gw.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_time(gw.pid()) - before;
    assert!(
        spent < Duration::from_millis(300),
        "{spent:?} of CPU in 1 s"
    );
    drop(flood);
    // Descriptors are back: requests are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        );
        if got.status() == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served again: {}",
            got.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
