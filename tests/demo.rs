//! Proves the `coregate demo` command: a child process serving 127.0.0.1:10000 whose answers
//! alternate between the two built-in bill services. The only test that uses the demo's fixed
//! ports (10000-10002, admin 9901); the child is always killed, even when an assertion fails.

mod support;

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::client::raw_exchange;
use support::harness::{ChildGuard, T, TempFile, wait_for_listener};

const V1: &str = "this is bill-service-v1\n";
const V2: &str = "hello, this is bill-service-v2\n";

#[test]
fn demo_answers_alternate_between_the_two_bill_services() {
    let log = TempFile::new("demo.log", "");
    let out = File::create(log.path()).expect("demo log file");
    let err = out.try_clone().expect("demo log file");
    let mut demo = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_coregate"))
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn coregate demo"),
    );
    let addr: SocketAddr = "127.0.0.1:10000".parse().expect("address");
    let log_text = || std::fs::read_to_string(log.path()).unwrap_or_default();
    if !wait_for_listener(addr, Duration::from_secs(10)) {
        panic!(
            "the demo did not listen on {addr} within 10 s (exited: {:?}); its output:\n{}",
            demo.exited(),
            log_text()
        );
    }

    let answers: Vec<String> = (0..4)
        .map(|i| {
            let got = raw_exchange(
                addr,
                b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                T,
            );
            let rs = got
                .try_responses()
                .unwrap_or_else(|e| panic!("request {i}: {e}; output:\n{}", log_text()));
            assert_eq!(rs.len(), 1, "request {i}: {:?}", got.text());
            assert_eq!(rs[0].status, 200, "request {i}: {:?}", got.text());
            rs[0].text()
        })
        .collect();
    for a in &answers {
        assert!(a == V1 || a == V2, "unexpected answer {a:?} in {answers:?}");
    }
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "the answers alternate: {answers:?}");
    }

    // The HTTPS listener, with the certificate the demo made at start.
    let https: Vec<String> = (0..2)
        .map(|i| {
            let out = Command::new("curl")
                .args(["-sk", "--max-time", "5", "https://127.0.0.1:10443/"])
                .output()
                .expect("curl runs");
            assert!(
                out.status.success(),
                "https request {i}; output:\n{}",
                log_text()
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    assert!(
        https.iter().all(|a| a == V1 || a == V2) && https[0] != https[1],
        "answers over https alternate too: {https:?}"
    );
    assert!(demo.exited().is_none(), "the demo is still running");
}
