//! TLS for the end-to-end tests: certificates made at run time (rcgen; no key is committed),
//! a blocking rustls client that reports what the handshake gave (leaf served, version,
//! resumption, ALPN), and a TLS origin server for upstream TLS.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::harness::T;

/// A directory of PEM files for one test, removed when dropped.
pub struct Dir(PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("coregate-tls-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Dir(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write pem");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The kind of key a certificate is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    EcdsaP256,
    Rsa2048,
}

fn key_pair(key: Key) -> KeyPair {
    match key {
        Key::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        Key::Rsa2048 => KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256),
    }
    .expect("key generation")
}

/// A certificate authority for one test.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate with its key, in PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = key_pair(Key::EcdsaP256);
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names; "*.x" wildcards allowed).
    pub fn server(&self, names: &[&str], key: Key) -> Leaf {
        self.leaf(
            names,
            key,
            ExtendedKeyUsagePurpose::ServerAuth,
            names[0],
            None,
        )
    }

    /// A server certificate valid until `days` from now (negative: expired).
    pub fn server_expiring(&self, names: &[&str], days: i64) -> Leaf {
        self.leaf(
            names,
            Key::EcdsaP256,
            ExtendedKeyUsagePurpose::ServerAuth,
            names[0],
            Some(days),
        )
    }

    /// A client certificate with subject CN `cn` and a URI SAN.
    pub fn client(&self, cn: &str, uri: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().expect("uri")));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = key_pair(Key::EcdsaP256);
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn leaf(
        &self,
        names: &[&str],
        key: Key,
        usage: ExtendedKeyUsagePurpose,
        cn: &str,
        days: Option<i64>,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        if let Some(days) = days {
            let now = time_now();
            params.not_before = now - time::Duration::days(days.abs() + 30);
            params.not_after = now + time::Duration::days(days);
        }
        let key = key_pair(key);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.expect("ca pem")).expect("ca root");
        }
        roots
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

impl Leaf {
    /// Writes the certificate and key as `<name>.pem` and `<name>.key`; returns their paths.
    pub fn write(&self, dir: &Dir, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.write(&format!("{name}.pem"), &self.cert_pem),
            dir.write(&format!("{name}.key"), &self.key_pem),
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What a client can be asked to do.
#[derive(Default, Clone)]
pub struct ClientOptions {
    /// Only TLS 1.2 (default: 1.2 and 1.3).
    pub tls12_only: bool,
    pub alpn: Vec<&'static str>,
    /// Client certificate and key (PEM).
    pub client_cert: Option<(String, String)>,
    /// Send no SNI.
    pub no_sni: bool,
    /// Keep no session: every handshake is a full one.
    pub no_resumption: bool,
    /// Offer only these suites, in this order (default: rustls's).
    pub suites: Vec<rustls::SupportedCipherSuite>,
}

impl ClientOptions {
    pub fn without_sni() -> ClientOptions {
        ClientOptions {
            no_sni: true,
            ..Default::default()
        }
    }

    pub fn tls12() -> ClientOptions {
        ClientOptions {
            tls12_only: true,
            ..Default::default()
        }
    }

    pub fn alpn(protocols: &[&'static str]) -> ClientOptions {
        ClientOptions {
            alpn: protocols.to_vec(),
            ..Default::default()
        }
    }

    /// Presents `leaf` as the client certificate.
    pub fn certificate(leaf: Leaf) -> ClientOptions {
        ClientOptions {
            client_cert: Some((leaf.cert_pem, leaf.key_pem)),
            ..Default::default()
        }
    }
}

/// A client config trusting `ca`; its session store is shared by every connection made with it
/// (so a second connection can resume).
pub fn client_config(ca: &Ca, opts: &ClientOptions) -> Arc<ClientConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !opts.suites.is_empty() {
        provider.cipher_suites = opts.suites.clone();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(ca.roots());
    let mut config = match &opts.client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client chain");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.enable_sni = !opts.no_sni;
    if opts.no_resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

/// What a TLS exchange with the gateway gave.
#[derive(Debug)]
pub struct TlsReply {
    /// The leaf certificate the server presented (DER).
    pub leaf: Vec<u8>,
    pub version: rustls::ProtocolVersion,
    pub suite: Option<rustls::CipherSuite>,
    pub resumed: bool,
    pub alpn: Option<Vec<u8>>,
    /// Every byte of the response, up to the server's close_notify.
    pub response: Vec<u8>,
}

impl TlsReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.response).into_owned()
    }

    pub fn status(&self) -> Option<u16> {
        self.text().split(' ').nth(1)?.parse().ok()
    }
}

/// Connects to `addr`, handshakes as `name` (sent as SNI unless the config says not to),
/// sends `GET path` with `Connection: close` and reads the whole response. Err: the
/// handshake or the exchange failed (the text says how).
pub fn tls_get(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
    path: &str,
) -> Result<TlsReply, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls_exchange(addr, name, config, request.as_bytes())
}

/// Like [`tls_get`] with raw request bytes.
pub fn tls_exchange(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
    request: &[u8],
) -> Result<TlsReply, String> {
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(config.clone(), server_name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect_timeout(&addr, T).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(T)).expect("timeout");
    sock.set_write_timeout(Some(T)).expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let version = conn.protocol_version().expect("version");
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .map_err(|e| format!("read ({} bytes so far): {e}", response.len()))?;
    Ok(TlsReply {
        leaf,
        version,
        suite,
        resumed,
        alpn,
        response,
    })
}

/// Only the handshake: Ok with what it gave, Err with rustls's reason.
pub fn tls_handshake(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
) -> Result<TlsReply, String> {
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut conn = ClientConnection::new(config.clone(), server_name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect_timeout(&addr, T).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(T)).expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    // A TLS 1.3 server sends its verdict on the client certificate after the client's last
    // flight: one read shows whether the connection survived it.
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .map_err(|e| format!("after handshake: {e}"))?;
    Ok(TlsReply {
        leaf: Vec::new(),
        version: conn.protocol_version().expect("version"),
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        alpn: conn.alpn_protocol().map(|p| p.to_vec()),
        response,
    })
}

/// A TLS origin: answers every request with `200` and `tls-origin <path>`, keeping connections
/// open; counts handshakes. Stops when dropped.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub handshakes: Arc<AtomicUsize>,
    /// SNI names the clients sent.
    pub names: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
}

impl TlsOrigin {
    pub fn start(leaf: &Leaf) -> TlsOrigin {
        Self::start_with(leaf, None)
    }

    /// An origin that requires a client certificate issued by `clients`.
    pub fn start_with(leaf: &Leaf, clients: Option<&Ca>) -> TlsOrigin {
        let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match clients {
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider(),
                )
                .build()
                .expect("client verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(builder.with_single_cert(chain, key).expect("origin cert"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, n, s) = (handshakes.clone(), names.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let (config, h, n) = (config.clone(), h.clone(), n.clone());
                        thread::spawn(move || {
                            let _ = serve_origin(sock, config, &h, &n);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        TlsOrigin {
            addr,
            handshakes,
            names,
            stop,
        }
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_origin(
    mut sock: TcpStream,
    config: Arc<ServerConfig>,
    handshakes: &AtomicUsize,
    names: &Mutex<Vec<Option<String>>>,
) -> io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(T))?;
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    handshakes.fetch_add(1, Ordering::Relaxed);
    names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(conn.server_name().map(str::to_owned));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = rustls::Stream::new(&mut conn, &mut sock).read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
            let body = format!("tls-origin {path}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            rustls::Stream::new(&mut conn, &mut sock).write_all(answer.as_bytes())?;
            if path == "/close" {
                // Answers, then ends the session cleanly while the connection idles.
                conn.send_close_notify();
                while conn.wants_write() {
                    conn.write_tls(&mut sock)?;
                }
                return Ok(());
            }
        }
    }
}

/// Reads a PEM file's first certificate as DER (to compare with what was served).
pub fn first_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).expect("read pem");
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate")
        .expect("pem")
        .to_vec()
}
