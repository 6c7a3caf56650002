//! Certificates across reloads and checks: SIGHUP re-reads them (a renewed certificate serves
//! new handshakes while clients keep connecting, none failing), a missing, mismatched or
//! unparsable file refuses the reload naming the file and the old certificate keeps serving,
//! and `check` validates the same way and warns about certificates near their end.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use support::gateway::CatchAll;
use support::harness::T;
use support::process::Coregate;
use support::tls::{Ca, ClientOptions, Dir, Key, Leaf, client_config, tls_get};
use support::upstream::HttpUpstream;

fn config(dir: &Dir, upstream: SocketAddr, workers: usize) -> String {
    let tls = format!(
        "    tls:
      certificates:
        - {{ cert: \"{}\", key: \"{}\", server_names: [\"*\"] }}",
        dir.path("site.pem").display(),
        dir.path("site.key").display()
    );
    CatchAll::new(upstream)
        .workers(workers)
        .listener("secure", &tls)
        .yaml()
}

/// Installs a certificate as an operator's renewal does: new files, then renamed over the old
/// ones, so a reader never sees half a file.
fn install(dir: &Dir, leaf: &Leaf) {
    let (cert, key) = leaf.write(dir, "incoming");
    std::fs::rename(key, dir.path("site.key")).expect("rename key");
    std::fs::rename(cert, dir.path("site.pem")).expect("rename cert");
}

#[test]
fn a_renewed_certificate_serves_new_handshakes_and_none_fails() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("renew");
    let ca = Ca::new("renew ca");
    let old = ca.server(&["site.test"], Key::EcdsaP256);
    install(&dir, &old);
    let gw = Coregate::start(&config(&dir, up.addr(), 2));
    let addr = gw.listener("secure");
    let client = client_config(&ca, &ClientOptions::default());

    // Clients keep connecting with full handshakes through the reload; every handshake must
    // succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let full = client_config(
        &ca,
        &ClientOptions {
            no_resumption: true,
            ..Default::default()
        },
    );
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, full) = (stop.clone(), full.clone());
            thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push(tls_get(addr, "site.test", &full, "/").map(|r| r.leaf));
                }
                seen
            })
        })
        .collect();
    let first = tls_get(addr, "site.test", &client, "/").expect("old certificate");
    assert_eq!(first.leaf, old.der);

    let new = ca.server(&["site.test"], Key::Rsa2048);
    install(&dir, &new);
    gw.signal(libc::SIGHUP);
    let line = gw.wait_for("reloaded:", T);
    assert!(
        line.contains("tls ~secure"),
        "the reload names the change: {line}"
    );
    let after = tls_get(addr, "site.test", &full, "/").expect("new certificate");
    assert_eq!(
        after.leaf, new.der,
        "new handshakes get the renewed certificate"
    );
    // Resumption with a ticket issued before the reload still works: the keys were kept.
    let resumed = tls_get(addr, "site.test", &client, "/").expect("resumed");
    assert!(
        resumed.resumed,
        "a ticket from before the reload resumes after it"
    );

    stop.store(true, Ordering::Relaxed);
    let seen: Vec<_> = loaders
        .into_iter()
        .flat_map(|h| h.join().expect("loader"))
        .collect();
    let failed: Vec<_> = seen.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} handshakes failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    assert!(
        seen.len() > 10,
        "clients kept connecting ({} handshakes)",
        seen.len()
    );
}

#[test]
fn a_broken_certificate_on_sighup_is_refused_and_the_old_one_keeps_serving() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("broken");
    let ca = Ca::new("broken ca");
    let good = ca.server(&["site.test"], Key::EcdsaP256);
    install(&dir, &good);
    let gw = Coregate::start(&config(&dir, up.addr(), 1));
    let addr = gw.listener("secure");
    let key_path = dir.path("site.key").display().to_string();
    let cert_path = dir.path("site.pem").display().to_string();

    // A key that belongs to another certificate.
    let other = ca.server(&["site.test"], Key::EcdsaP256);
    std::fs::write(dir.path("site.key"), &other.key_pem).expect("write key");
    gw.signal(libc::SIGHUP);
    let line = gw.wait_for("does not match", T);
    assert!(
        line.contains(&key_path) && line.contains(&cert_path),
        "{line}"
    );
    gw.wait_for("listeners[0].tls.certificates[0].key", T);

    // An unparsable certificate, then a missing one.
    std::fs::write(dir.path("site.key"), &good.key_pem).expect("restore key");
    std::fs::write(dir.path("site.pem"), "not a certificate\n").expect("write cert");
    gw.signal(libc::SIGHUP);
    let line = gw.wait_for("no certificate in it", T);
    assert!(line.contains(&cert_path), "{line}");
    std::fs::remove_file(dir.path("site.pem")).expect("remove cert");
    gw.signal(libc::SIGHUP);
    let line = gw.wait_for("cannot read", T);
    assert!(line.contains(&cert_path), "{line}");

    assert_eq!(
        gw.log()
            .iter()
            .filter(|l| l.contains("reload refused"))
            .count(),
        3
    );
    assert!(!gw.log().iter().any(|l| l.contains("reloaded:")));
    let client = client_config(&ca, &ClientOptions::default());
    let reply = tls_get(addr, "site.test", &client, "/").expect("still serving");
    assert_eq!(reply.leaf, good.der, "the old certificate keeps serving");
}

fn check(path: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coregate"))
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run coregate check")
}

#[test]
fn check_validates_certificates_and_warns_before_they_expire() {
    let dir = Dir::new("check");
    let ca = Ca::new("check ca");
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let yaml = dir.write("gw.yaml", &config(&dir, upstream, 1));

    install(&dir, &ca.server(&["site.test"], Key::EcdsaP256));
    let out = check(&yaml);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("tls: min 1.2, alpn http/1.1"), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");

    install(&dir, &ca.server_expiring(&["site.test"], 10));
    let out = check(&yaml);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a near expiry is a warning, not an error"
    );
    assert!(
        stdout.contains("warning: listener secure: ") && stdout.contains("expires in 9 days")
            || stdout.contains("expires in 10 days"),
        "{stdout}"
    );

    install(&dir, &ca.server_expiring(&["site.test"], -2));
    let stdout = String::from_utf8_lossy(&check(&yaml).stdout).into_owned();
    assert!(stdout.contains("expired on"), "{stdout}");

    std::fs::write(
        dir.path("site.key"),
        ca.server(&["x.test"], Key::EcdsaP256).key_pem,
    )
    .expect("write key");
    let out = check(&yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("listeners[0].tls.certificates[0].key: ")
            && stderr.contains("does not match the certificate in"),
        "{stderr}"
    );
}
