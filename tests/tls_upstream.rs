//! TLS toward upstreams over real sockets: the cluster's CA and server name are verified,
//! connections are pooled and reused like plain ones (and retired when the origin ends the
//! session while they idle), handshake failures are a counted 502, `verify: false` accepts any
//! certificate, and a client certificate is presented when the cluster has one.

mod support;

use std::net::SocketAddr;

use support::client::raw_exchange;
use support::gateway::{CatchAll, TestGateway};
use support::harness::T;
use support::tls::{Ca, Dir, Key, TlsOrigin};

/// A gateway whose only cluster reaches `origin` with `tls` (YAML under the cluster's `tls:`,
/// indented 6).
fn gateway(origin: SocketAddr, tls: &str) -> TestGateway {
    CatchAll::new(origin)
        .cluster("secure", &format!("    tls:\n{tls}"))
        .start()
}

fn get(gw: &TestGateway, path: &str) -> support::client::RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    raw_exchange(gw.addr, request.as_bytes(), T)
}

/// An origin for `origin.test` with a certificate of a fresh CA, and a gateway whose cluster
/// trusts that CA and sends that name.
fn verified_origin(tag: &str) -> (Dir, TlsOrigin, TestGateway) {
    let dir = Dir::new(tag);
    let ca = Ca::new("origin ca");
    let origin = TlsOrigin::start(&ca.server(&["origin.test"], Key::EcdsaP256));
    let ca_path = dir.write("ca.pem", &ca.pem);
    let tls = format!(
        "      ca: \"{}\"\n      sni: origin.test\n",
        ca_path.display()
    );
    let gw = gateway(origin.addr, &tls);
    (dir, origin, gw)
}

fn body(got: &support::client::RawResponse) -> String {
    got.responses()[0].text()
}

#[test]
fn upstream_tls_verifies_the_name_and_pools_the_connection() {
    let (_dir, origin, gw) = verified_origin("up-verify");
    let first = get(&gw, "/a");
    assert_eq!(first.status(), Some(200), "{}", first.text());
    assert_eq!(body(&first), "tls-origin /a");
    assert_eq!(body(&get(&gw, "/b")), "tls-origin /b");
    assert_eq!(
        origin.handshakes.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the second request reused the pooled TLS connection"
    );
    let names = origin.names.lock().unwrap().clone();
    assert_eq!(names, vec![Some("origin.test".to_owned())], "SNI sent");
    let totals = gw.endpoint("secure", origin.addr);
    assert_eq!(
        (
            totals.upstream_cx_total.get(),
            totals.upstream_cx_reused.get()
        ),
        (1, 1)
    );
}

#[test]
fn an_ip_endpoint_is_verified_against_its_ip_address_without_sni() {
    let dir = Dir::new("up-ip");
    let ca = Ca::new("ip ca");
    let origin = TlsOrigin::start(&ca.server(&["127.0.0.1"], Key::Rsa2048));
    let ca_path = dir.write("ca.pem", &ca.pem);
    let gw = gateway(
        origin.addr,
        &format!("      ca: \"{}\"\n", ca_path.display()),
    );
    assert_eq!(body(&get(&gw, "/ip")), "tls-origin /ip");
    let names = origin.names.lock().unwrap().clone();
    assert_eq!(names, vec![None], "no SNI for an IP address (RFC 6066 §3)");
}

#[test]
fn an_upstream_certificate_that_does_not_verify_is_a_counted_502() {
    let dir = Dir::new("up-wrong");
    let origin_ca = Ca::new("real ca");
    let origin = TlsOrigin::start(&origin_ca.server(&["origin.test"], Key::EcdsaP256));
    let wrong = dir.write("wrong.pem", &Ca::new("wrong ca").pem);
    let tls = format!(
        "      ca: \"{}\"\n      sni: origin.test\n",
        wrong.display()
    );
    let gw = gateway(origin.addr, &tls);
    let got = get(&gw, "/x");
    assert_eq!(got.status(), Some(502), "{}", got.text());
    assert_eq!(body(&got), "upstream TLS handshake failed\n");
    assert!(
        gw.endpoint("secure", origin.addr)
            .upstream_cx_tls_fail
            .get()
            >= 1
    );

    // The right CA but the wrong name fails the same way.
    let right = dir.write("right.pem", &origin_ca.pem);
    let tls = format!("      ca: \"{}\"\n      sni: other.test\n", right.display());
    let gw = gateway(origin.addr, &tls);
    assert_eq!(get(&gw, "/y").status(), Some(502));
}

#[test]
fn verify_false_accepts_any_certificate() {
    let origin =
        TlsOrigin::start(&Ca::new("unknown ca").server(&["whatever.test"], Key::EcdsaP256));
    let gw = gateway(origin.addr, "      verify: false\n");
    assert_eq!(body(&get(&gw, "/any")), "tls-origin /any");
}

#[test]
fn a_pooled_tls_connection_the_origin_closed_is_not_reused() {
    let (_dir, origin, gw) = verified_origin("up-close");
    // The origin ends the session (close_notify, then FIN) right after this answer.
    assert_eq!(body(&get(&gw, "/close")), "tls-origin /close");
    let deadline = std::time::Instant::now() + T;
    while gw
        .endpoint("secure", origin.addr)
        .upstream_cx_idle_closed
        .get()
        == 0
    {
        // The idle connection's armed read sees the close; checkout counts it.
        let got = get(&gw, "/after");
        assert_eq!(
            body(&got),
            "tls-origin /after",
            "never served on the closed session"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection was never retired"
        );
    }
    assert_eq!(
        gw.endpoint("secure", origin.addr)
            .upstream_cx_idle_closed
            .get(),
        1
    );
}

#[test]
fn a_client_certificate_is_presented_when_the_cluster_has_one() {
    let dir = Dir::new("up-mtls");
    let ca = Ca::new("origin ca");
    let clients = Ca::new("gateway clients");
    let origin =
        TlsOrigin::start_with(&ca.server(&["origin.test"], Key::EcdsaP256), Some(&clients));
    let ca_path = dir.write("ca.pem", &ca.pem);
    let (cert, key) = clients
        .client("gateway", "spiffe://test/gateway")
        .write(&dir, "gw");
    let without = format!(
        "      ca: \"{}\"\n      sni: origin.test\n",
        ca_path.display()
    );
    let gw = gateway(origin.addr, &without);
    assert_eq!(
        get(&gw, "/anon").status(),
        Some(502),
        "the origin requires a certificate"
    );
    let with = format!(
        "{without}      client_cert: \"{}\"\n      client_key: \"{}\"\n",
        cert.display(),
        key.display()
    );
    let gw = gateway(origin.addr, &with);
    assert_eq!(body(&get(&gw, "/mtls")), "tls-origin /mtls");
}
