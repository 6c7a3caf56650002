//! TLS termination over real sockets with a real rustls client: SNI picks the certificate
//! (exact, wildcard, default, refused), TLS 1.2 and 1.3, resumption on another core, client
//! certificates, the scheme and client identity passed upstream, plaintext and stalled
//! handshakes, and redirects to https.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::client::raw_exchange;
use support::gateway::{CatchAll, TestGateway};
use support::harness::T;
use support::tls::{Ca, ClientOptions, Dir, Key, client_config, first_der, tls_get, tls_handshake};
use support::upstream::HttpUpstream;

/// A gateway with one TLS listener (`tls` is the YAML under `tls:`, indented 6) routing every
/// host to `upstream`.
fn tls_gateway(workers: usize, tls: &str, upstream: SocketAddr, limits: &str) -> TestGateway {
    CatchAll::new(upstream)
        .workers(workers)
        .top(&format!("limits: {limits}"))
        .listener("secure", &format!("    tls:\n{tls}"))
        .start()
}

/// `listener.secure.ssl.<name>`, summed over the workers.
fn ssl(gw: &TestGateway, name: &str) -> u64 {
    let text = gw.gateway.registry().render();
    let key = format!("listener.secure.ssl.{name}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ssl.{name} in stats:\n{text}"))
}

/// Waits (bounded) for `ssl.<name>` to reach `want`: a connection is counted as its task
/// ends, which can be just after the client saw the close.
fn assert_ssl(gw: &TestGateway, name: &str, want: u64) {
    let deadline = Instant::now() + T;
    loop {
        let got = ssl(gw, name);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ssl.{name} is {got}, expected {want}:\n{}",
            gw.gateway.registry().render()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_unrecognized_name(err: &str) {
    assert!(
        err.contains("UnrecognisedName") || err.contains("UnrecognizedName"),
        "refused with unrecognized_name: {err}"
    );
}

/// Three certificates: an exact name, a wildcard and the default.
struct Sni {
    _dir: Dir,
    ca: Ca,
    exact: Vec<u8>,
    wildcard: Vec<u8>,
    default: Vec<u8>,
    yaml: String,
}

fn sni_certificates(with_default: bool) -> Sni {
    let dir = Dir::new("sni");
    let ca = Ca::new("sni test ca");
    let (ec, ek) = ca.server(&["a.test"], Key::EcdsaP256).write(&dir, "exact");
    let (wc, wk) = ca
        .server(&["*.wild.test"], Key::Rsa2048)
        .write(&dir, "wild");
    let (dc, dk) = ca
        .server(&["default.test"], Key::EcdsaP256)
        .write(&dir, "default");
    let mut yaml = format!(
        "      certificates:
        - {{ cert: \"{}\", key: \"{}\", server_names: [\"a.test\"] }}
        - {{ cert: \"{}\", key: \"{}\", server_names: [\"*.wild.test\"] }}
",
        ec.display(),
        ek.display(),
        wc.display(),
        wk.display()
    );
    if with_default {
        yaml.push_str(&format!(
            "        - {{ cert: \"{}\", key: \"{}\", server_names: [\"*\"] }}\n",
            dc.display(),
            dk.display()
        ));
    }
    Sni {
        exact: first_der(&ec),
        wildcard: first_der(&wc),
        default: first_der(&dc),
        _dir: dir,
        ca,
        yaml,
    }
}

#[test]
fn sni_picks_the_certificate_exact_wildcard_or_default() {
    let up = HttpUpstream::builder().name("origin").start();
    let sni = sni_certificates(true);
    let gw = tls_gateway(1, &sni.yaml, up.addr(), "{}");
    let config = client_config(&sni.ca, &ClientOptions::default());

    let reply = tls_get(gw.addr, "a.test", &config, "/x").expect("exact name");
    assert_eq!(reply.leaf, sni.exact, "a.test gets its own certificate");
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.alpn, None, "no ALPN offered, none chosen");

    let reply = tls_get(gw.addr, "Deep.Wild.Test", &config, "/").expect("wildcard");
    assert_eq!(
        reply.leaf, sni.wildcard,
        "*.wild.test serves deep.wild.test"
    );

    // A name no certificate lists, and a client sending no SNI at all, get the default.
    let unknown = client_config(&sni.ca, &ClientOptions::default());
    let err = tls_get(gw.addr, "other.test", &unknown, "/").expect_err("default cert");
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "the default certificate is served for other.test: {err}"
    );
    let no_sni = client_config(&sni.ca, &ClientOptions::without_sni());
    let reply = tls_get(gw.addr, "default.test", &no_sni, "/").expect("no SNI");
    assert_eq!(
        reply.leaf, sni.default,
        "no SNI gets the default certificate"
    );

    // The upstream learns the scheme from the connection, whatever the client claims.
    let request = b"GET /scheme HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: http\r\n\
Connection: close\r\n\r\n";
    support::tls::tls_exchange(gw.addr, "a.test", &config, request).expect("exchange");
    let seen = up.wait_requests(4, T);
    let last = seen.iter().find(|r| r.path == "/scheme").expect("recorded");
    assert_eq!(last.header_all("x-forwarded-proto"), vec!["https"]);
    // The client that rejected the default certificate's name ended its handshake.
    assert_ssl(&gw, "handshake", 4);
    assert_ssl(&gw, "connection_error", 1);
}

#[test]
fn an_unknown_name_without_a_default_is_refused_with_unrecognized_name() {
    let up = HttpUpstream::builder().start();
    let sni = sni_certificates(false);
    let gw = tls_gateway(1, &sni.yaml, up.addr(), "{}");
    let config = client_config(&sni.ca, &ClientOptions::default());
    let err = tls_get(gw.addr, "nobody.test", &config, "/").expect_err("refused");
    assert_unrecognized_name(&err);
    let no_sni = client_config(&sni.ca, &ClientOptions::without_sni());
    let err = tls_get(gw.addr, "a.test", &no_sni, "/").expect_err("no SNI, no default");
    assert_unrecognized_name(&err);
    // Known names still work.
    tls_get(gw.addr, "a.test", &config, "/").expect("a.test");
    assert_ssl(&gw, "no_certificate", 2);
    assert_ssl(&gw, "handshake", 1);
    assert_eq!(up.request_count(), 1);
}

fn single_certificate(dir: &Dir, ca: &Ca, extra: &str) -> String {
    let (c, k) = ca.server(&["site.test"], Key::EcdsaP256).write(dir, "site");
    format!(
        "      certificates:
        - {{ cert: \"{}\", key: \"{}\", server_names: [\"*\"] }}
{extra}",
        c.display(),
        k.display()
    )
}

#[test]
fn tls_1_2_and_1_3_and_min_version() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("versions");
    let ca = Ca::new("versions ca");
    let tls = single_certificate(&dir, &ca, "      alpn: [http/1.1]\n");
    let gw = tls_gateway(1, &tls, up.addr(), "{}");
    let both = client_config(&ca, &ClientOptions::alpn(&["h2", "http/1.1"]));
    let reply = tls_get(gw.addr, "site.test", &both, "/").expect("1.3");
    assert_eq!(reply.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(
        reply.alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "ALPN picks http/1.1"
    );
    let old = client_config(&ca, &ClientOptions::tls12());
    let reply = tls_get(gw.addr, "site.test", &old, "/").expect("1.2");
    assert_eq!(reply.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(reply.status(), Some(200));
    // The server's suite order wins (AES-128-GCM first), whatever the client prefers.
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    for (suites, want) in [
        (
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let config = client_config(
            &ca,
            &ClientOptions {
                suites,
                ..Default::default()
            },
        );
        let reply = tls_get(gw.addr, "site.test", &config, "/").expect("suite order");
        assert_eq!(reply.suite, Some(want));
    }
    // A client that offers only h2 shares no protocol with an http/1.1 listener.
    let h2_only = client_config(&ca, &ClientOptions::alpn(&["h2"]));
    let err = tls_get(gw.addr, "site.test", &h2_only, "/").expect_err("no common ALPN");
    assert!(err.contains("NoApplicationProtocol"), "{err}");
    drop(gw);

    let tls = single_certificate(&dir, &ca, "      min_version: \"1.3\"\n");
    let gw = tls_gateway(1, &tls, up.addr(), "{}");
    let err = tls_get(gw.addr, "site.test", &old, "/").expect_err("1.2 refused");
    assert!(
        err.contains("ProtocolVersion") || err.contains("protocol"),
        "{err}"
    );
    assert_ssl(&gw, "connection_error", 1);
    tls_get(gw.addr, "site.test", &both, "/").expect("1.3 still served");
}

/// Connects until a resumed handshake lands on a worker other than the one that issued the
/// ticket; per-worker counters say which worker served each handshake.
fn resumes_on_the_other_worker(tls12: bool) {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("resume");
    let ca = Ca::new("resume ca");
    let tls = single_certificate(&dir, &ca, "");
    let gw = tls_gateway(2, &tls, up.addr(), "{}");
    let config = client_config(
        &ca,
        &ClientOptions {
            tls12_only: tls12,
            ..Default::default()
        },
    );
    let workers = gw.gateway.registry().listener_per_worker("secure");
    assert_eq!(workers.len(), 2);
    let first = tls_get(gw.addr, "site.test", &config, "/").expect("full handshake");
    assert!(!first.resumed);
    let issuer = workers
        .iter()
        .position(|w| w.ssl.handshake.get() == 1)
        .expect("one worker did the full handshake");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempts = 0;
    loop {
        assert!(
            Instant::now() < deadline && attempts < 200,
            "no resumed handshake on the other worker after {attempts} connections"
        );
        attempts += 1;
        let reply = tls_get(gw.addr, "site.test", &config, "/").expect("resumption");
        assert!(reply.resumed, "connection {attempts} was not resumed");
        assert_eq!(reply.status(), Some(200));
        let other = &workers[1 - issuer];
        if other.ssl.session_reused.get() > 0 {
            break;
        }
    }
    assert_ssl(&gw, "session_reused", attempts);
}

#[test]
fn tls_1_3_tickets_resume_on_another_worker() {
    resumes_on_the_other_worker(false);
}

#[test]
fn tls_1_2_tickets_resume_on_another_worker() {
    resumes_on_the_other_worker(true);
}

struct Mtls {
    _dir: Dir,
    ca: Ca,
    client_ca: Ca,
    up: HttpUpstream,
    gw: TestGateway,
}

fn mtls(mode: &str) -> Mtls {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("mtls");
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let ca_path = dir.write("clients.pem", &client_ca.pem);
    let extra = format!(
        "      client_auth: {{ ca: \"{}\", mode: {mode} }}
      client_cert_header: x-client-cert
",
        ca_path.display()
    );
    let tls = single_certificate(&dir, &ca, &extra);
    let gw = tls_gateway(1, &tls, up.addr(), "{}");
    Mtls {
        _dir: dir,
        ca,
        client_ca,
        up,
        gw,
    }
}

#[test]
fn client_certificates_required_verified_and_passed_upstream() {
    let m = mtls("required");
    let with = |ca: &Ca| {
        let leaf = ca.client("alice", "spiffe://test/alice");
        client_config(&m.ca, &ClientOptions::certificate(leaf))
    };
    // A client certificate from the configured CA: served, its identity passed upstream in
    // the named header, and a copy the client sent is not.
    let good = with(&m.client_ca);
    let request = b"GET /me HTTP/1.1\r\nHost: site.test\r\nX-Client-Cert: forged\r\n\
X-Forwarded-Client-Cert: forged\r\nConnection: close\r\n\r\n";
    let reply = support::tls::tls_exchange(m.gw.addr, "site.test", &good, request)
        .expect("verified client");
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let seen = m.up.wait_requests(1, T);
    let header = seen[0].header_all("x-client-cert");
    assert_eq!(header.len(), 1, "one header, the gateway's: {header:?}");
    assert!(header[0].starts_with("Hash="), "{}", header[0]);
    assert!(header[0].contains("Subject=\"CN=alice\""), "{}", header[0]);
    assert!(
        header[0].contains("URI=spiffe://test/alice"),
        "{}",
        header[0]
    );
    assert!(seen[0].header("x-forwarded-client-cert").is_none());

    // No certificate, or one from another CA: refused during the handshake.
    let none = client_config(&m.ca, &ClientOptions::default());
    let err = tls_handshake(m.gw.addr, "site.test", &none).expect_err("no client cert");
    assert!(
        err.contains("CertificateRequired") || err.contains("alert"),
        "{err}"
    );
    let stranger = with(&Ca::new("some other ca"));
    let err = tls_handshake(m.gw.addr, "site.test", &stranger).expect_err("wrong CA");
    assert!(
        err.contains("alert") || err.contains("Certificate"),
        "{err}"
    );
    assert_ssl(&m.gw, "fail_verify_no_cert", 1);
    assert_ssl(&m.gw, "fail_verify_error", 1);
    assert_eq!(m.up.request_count(), 1, "refused clients reach nothing");
}

#[test]
fn optional_client_certificates_let_anonymous_clients_in() {
    let m = mtls("optional");
    let none = client_config(&m.ca, &ClientOptions::default());
    let request = b"GET /anon HTTP/1.1\r\nHost: site.test\r\nX-Client-Cert: forged\r\n\
Connection: close\r\n\r\n";
    let reply =
        support::tls::tls_exchange(m.gw.addr, "site.test", &none, request).expect("anonymous");
    assert_eq!(reply.status(), Some(200));
    let leaf = m.client_ca.client("bob", "spiffe://test/bob");
    let with = client_config(&m.ca, &ClientOptions::certificate(leaf));
    tls_get(m.gw.addr, "site.test", &with, "/bob").expect("with a certificate");
    let seen = m.up.wait_requests(2, T);
    let anon = seen.iter().find(|r| r.path == "/anon").expect("anon");
    assert!(
        anon.header("x-client-cert").is_none(),
        "a forged copy is removed"
    );
    let bob = seen.iter().find(|r| r.path == "/bob").expect("bob");
    assert!(
        bob.header("x-client-cert")
            .is_some_and(|v| v.contains("CN=bob"))
    );
}

#[test]
fn plaintext_http_on_a_tls_port_is_told_and_closed() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("plain");
    let ca = Ca::new("plain ca");
    let gw = tls_gateway(1, &single_certificate(&dir, &ca, ""), up.addr(), "{}");
    let got = raw_exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T);
    assert_eq!(got.status(), Some(400), "{}", got.text());
    assert!(got.text().contains("TLS listener"));
    assert!(got.closed, "the connection is closed at once");
    assert_ssl(&gw, "plaintext_request", 1);
    assert_eq!(up.request_count(), 0);
}

#[test]
fn a_stalled_handshake_is_cut_at_the_header_timeout() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("stall");
    let ca = Ca::new("stall ca");
    let tls = single_certificate(&dir, &ca, "");
    let gw = tls_gateway(1, &tls, up.addr(), "{ header_timeout: 300ms }");
    // Half a TLS record header, then nothing.
    let mut sock = TcpStream::connect(gw.addr).expect("connect");
    sock.set_read_timeout(Some(T)).expect("timeout");
    sock.write_all(&[0x16, 0x03]).expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = sock.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "cut at the header timeout, after {waited:?}"
    );
    assert_ssl(&gw, "handshake_timeout", 1);
    assert_eq!(
        gw.gateway.registry().workers()[0].connections_active.get(),
        0
    );
}

#[test]
fn an_oversized_client_hello_is_refused() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("big");
    let ca = Ca::new("big ca");
    let gw = tls_gateway(1, &single_certificate(&dir, &ca, ""), up.addr(), "{}");
    let mut sock = TcpStream::connect(gw.addr).expect("connect");
    sock.set_read_timeout(Some(T)).expect("timeout");
    // A ClientHello that announces 60,000 bytes, sent as full-size records.
    let mut hello = vec![0x01, 0x00, 0xea, 0x60, 0x03, 0x03];
    hello.resize(20_000, 0x41);
    for chunk in hello.chunks(16_384) {
        let len = chunk.len() as u16;
        let mut record = vec![0x16, 0x03, 0x01, (len >> 8) as u8, len as u8];
        record.extend_from_slice(chunk);
        if sock.write_all(&record).is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    assert_ssl(&gw, "client_hello_too_large", 1);
    assert_eq!(ssl(&gw, "connection_error"), 0);
}

#[test]
fn redirect_to_https_answers_301_or_308_with_the_same_host_and_target() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners:
  - name: plain
    address: 127.0.0.1:0
    virtual_hosts:
      - name: secure-only
        domains: [\"shop.test\"]
        redirect_to_https: true
        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: backend }}
      - name: rest
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: backend }}
clusters:
  - name: backend
    endpoints:
      - {{ address: \"{}\" }}
",
        up.addr()
    ));
    let got = raw_exchange(
        gw.addr,
        b"GET /cart?id=7 HTTP/1.1\r\nHost: Shop.test:8080\r\n\r\n",
        Duration::from_millis(500),
    );
    let r = &got.responses()[0];
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://Shop.test/cart?id=7"));
    assert_eq!(r.header("content-length"), Some("0"));
    let got = raw_exchange(
        gw.addr,
        b"POST /pay HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\nabc",
        Duration::from_millis(500),
    );
    let r = &got.responses()[0];
    assert_eq!(r.status, 308, "a POST keeps its method: 308");
    assert_eq!(r.header("location"), Some("https://shop.test/pay"));
    // Other virtual hosts are proxied as usual.
    let got = raw_exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        T,
    );
    assert_eq!(got.status(), Some(200));
    assert_eq!(
        up.request_count(),
        1,
        "only the other host reached the upstream"
    );
}

#[test]
fn curl_reaches_the_upstream_through_tls() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("curl is required (.ci/run installs it)");
    }
    let up = HttpUpstream::builder().name("behind-tls").start();
    let sni = sni_certificates(true);
    let gw = tls_gateway(1, &sni.yaml, up.addr(), "{}");
    let dir = Dir::new("curl");
    let ca = dir.write("ca.pem", &sni.ca.pem);
    let port = gw.addr.port();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            &ca.display().to_string(),
            "--resolve",
            &format!("a.test:{port}:127.0.0.1"),
            "-w",
            "\n%{http_code} %{ssl_verify_result}",
            &format!("https://a.test:{port}/via-curl"),
        ])
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.trim_end().ends_with("200 0"),
        "status 200, verified: {stdout}"
    );
    let seen = up.wait_requests(1, T);
    assert_eq!(seen[0].path, "/via-curl");
}

#[test]
fn routes_can_match_on_a_presented_client_certificate() {
    let trusted = HttpUpstream::builder().name("trusted").start();
    let anyone = HttpUpstream::builder().name("anyone").start();
    let dir = Dir::new("route-cert");
    let ca = Ca::new("route ca");
    let clients = Ca::new("route clients");
    let ca_path = dir.write("clients.pem", &clients.pem);
    let (cert, key) = ca
        .server(&["site.test"], Key::EcdsaP256)
        .write(&dir, "site");
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: \"{}\", key: \"{}\", server_names: [\"*\"] }}
      client_auth: {{ ca: \"{}\", mode: optional }}
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/admin/\", tls_context: {{ presented: true }} }}
            route: {{ cluster: trusted }}
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: anyone }}
clusters:
  - name: trusted
    endpoints:
      - {{ address: \"{}\" }}
  - name: anyone
    endpoints:
      - {{ address: \"{}\" }}
",
        cert.display(),
        key.display(),
        ca_path.display(),
        trusted.addr(),
        anyone.addr()
    ));
    let leaf = clients.client("ops", "spiffe://test/ops");
    let with = client_config(&ca, &ClientOptions::certificate(leaf));
    let without = client_config(&ca, &ClientOptions::default());
    tls_get(gw.addr, "site.test", &with, "/admin/x").expect("with a certificate");
    tls_get(gw.addr, "site.test", &without, "/admin/y").expect("without");
    assert_eq!(trusted.wait_requests(1, T)[0].path, "/admin/x");
    assert_eq!(anyone.wait_requests(1, T)[0].path, "/admin/y");
}
