//! TLS through rustls, and the only module that calls it (rustls 0.24 replaces this API): the
//! certificates and CAs read and checked, each listener's server configs (the ClientHello is
//! read first, and SNI picks the certificate through the routing host index), session tickets
//! shared by every core and kept across reloads, the upstream client configs, and the TLS
//! stream, driven over the core's own owned-buffer I/O.
//!
//! The stream is rustls's buffered connection fed by hand: ciphertext arrives in a buffer of the
//! core's io_uring ring (`read_tls` from it, `process_new_packets`, plaintext out of `reader()`);
//! plaintext goes in through `writer()` and out through `write_tls` into a recycled buffer. A
//! waiting connection holds no buffer of its own, only rustls's state. The session sits in a
//! `RefCell` that is never borrowed across an await, so one read and one write can be in flight
//! at once. Only the writer sends: what rustls queues while reading (a KeyUpdate answer) leaves
//! with the next write, as RFC 8446 §4.6.3 allows (before the next application data).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{Acceptor, NoServerSessionStorage, ProducesTickets, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, Connection, DigitallySignedStruct, HandshakeKind, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::hosts::{Domain, HostIndex};
use crate::rt::{self, Received, Stream, TcpStream};

/// Most bytes of ClientHello accepted before the handshake is refused. Real ones are 0.3-2 KiB
/// (with a post-quantum key share ~1.8 KiB); the bound keeps a client from making the acceptor
/// buffer without end.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The one crypto provider: aws-lc-rs (1.5-1.7x ring on AES-GCM here, post-quantum hybrid key
/// exchange), installed explicitly so that no process default is consulted. Its suites in
/// Mozilla's "intermediate" order, which the server applies (`ignore_client_order`): AES-128-GCM
/// first (as strong in practice, and cheaper than AES-256-GCM), then AES-256-GCM, then
/// ChaCha20-Poly1305; all AEAD with ECDHE.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    TLS13_AES_128_GCM_SHA256,
                    TLS13_AES_256_GCM_SHA384,
                    TLS13_CHACHA20_POLY1305_SHA256,
                    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                ],
                ..rustls::crypto::aws_lc_rs::default_provider()
            })
        })
        .clone()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn der_concat(chain: &[CertificateDer<'_>]) -> Vec<u8> {
    chain
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a valid PEM certificate file ({e})", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(chain)
}

// ---------------------------------------------------------------- certificates and CAs

/// A certificate chain with its private key, read from PEM files and checked: the key parses,
/// is of a supported kind and matches the leaf certificate.
#[derive(Clone)]
pub struct Certificate {
    key: Arc<CertifiedKey>,
    /// Over the chain and key bytes: whether a reload changed the certificate.
    fingerprint: [u8; 32],
    /// The leaf's subject, and its validity end (Unix seconds, and as text).
    pub subject: String,
    pub not_after: i64,
    pub not_after_text: String,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for Certificate {}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Reads and checks a certificate chain and its key. The error says which of the two files is
/// at fault ("cert" or "key") and why, naming it.
pub fn load_certificate(cert: &Path, key: &Path) -> Result<Certificate, (&'static str, String)> {
    let chain = read_chain(cert).map_err(|e| ("cert", e))?;
    load_with_chain(chain, cert, key).map_err(|e| ("key", e))
}

fn load_with_chain(
    chain: Vec<CertificateDer<'static>>,
    cert: &Path,
    key: &Path,
) -> Result<Certificate, String> {
    let key_pem = read_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{}: no private key in it ({e}; expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" \
             or \"EC PRIVATE KEY\" block)",
            key.display()
        )
    })?;
    let fingerprint = sha256(&[&der_concat(&chain), key_der.secret_der()]);
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: unsupported private key ({e})", key.display()))?;
    let (subject, not_after, not_after_text) = leaf_facts(&chain[0]).map_err(|e| {
        format!(
            "{}: the first certificate does not parse ({e})",
            cert.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(format!(
            "{} does not match the certificate in {}",
            key.display(),
            cert.display()
        ));
    }
    Ok(Certificate {
        key: Arc::new(certified),
        fingerprint,
        subject,
        not_after,
        not_after_text,
    })
}

/// The subject and the end of validity of a DER certificate.
fn leaf_facts(der: &[u8]) -> Result<(String, i64, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let not_after = cert.validity().not_after;
    Ok((
        cert.subject().to_string(),
        not_after.timestamp(),
        not_after.to_string(),
    ))
}

impl Certificate {
    /// A warning when the certificate has expired or expires within `days` of `now` (Unix
    /// seconds).
    pub fn expiry_warning(&self, now: i64, days: i64) -> Option<String> {
        let left = self.not_after - now;
        if left < 0 {
            Some(format!(
                "certificate \"{}\" expired on {}",
                self.subject, self.not_after_text
            ))
        } else if left < days * 86_400 {
            Some(format!(
                "certificate \"{}\" expires in {} days ({})",
                self.subject,
                left / 86_400,
                self.not_after_text
            ))
        } else {
            None
        }
    }
}

/// Certificate authorities, from a PEM bundle: to verify clients (mTLS) or upstreams.
#[derive(Clone)]
pub struct CaBundle {
    roots: Arc<RootCertStore>,
    fingerprint: [u8; 32],
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for CaBundle {}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} certificates)", self.roots.len())
    }
}

/// Reads a PEM bundle of CA certificates; every one of them must be usable as a trust anchor.
pub fn load_ca(path: &Path) -> Result<CaBundle, String> {
    let chain = read_chain(path)?;
    let fingerprint = sha256(&[&der_concat(&chain)]);
    let mut roots = RootCertStore::empty();
    for (i, der) in chain.into_iter().enumerate() {
        roots.add(der).map_err(|e| {
            format!(
                "{}: certificate {} is not a usable CA ({e})",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(CaBundle {
        roots: Arc::new(roots),
        fingerprint,
    })
}

// ---------------------------------------------------------------- session tickets

/// Session ticket keys, one set per listener and client-auth policy, shared by every core (a
/// ticket resumes on whichever core SO_REUSEPORT picks) and kept across reloads (new keys would
/// invalidate every ticket out there). Separate per policy: a session resumed under another
/// client-auth policy would skip its verification. Each rotates its key every 6 hours
/// (rustls's ticketer), accepting the previous one.
#[derive(Default)]
pub struct Tickets(Mutex<HashMap<String, Arc<dyn ProducesTickets>>>);

impl Tickets {
    fn get(&self, key: String) -> Result<Arc<dyn ProducesTickets>, String> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = map.get(&key) {
            return Ok(t.clone());
        }
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| format!("cannot create session ticket keys: {e}"))?;
        map.insert(key, ticketer.clone());
        Ok(ticketer)
    }
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "Tickets({n} policies)")
    }
}

// ---------------------------------------------------------------- server configs

/// A certificate as a listener serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCertificate {
    pub certificate: Certificate,
    pub server_names: Vec<Domain>,
    pub client_auth: Option<ClientAuth>,
}

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

/// Whether a client certificate must be sent, or may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuthMode {
    #[default]
    Required,
    Optional,
}

/// Client certificates asked for during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub ca: CaBundle,
    pub mode: ClientAuthMode,
}

/// What a listener's `tls` says, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub certificates: Vec<ServedCertificate>,
    pub min_version: TlsVersion,
    pub alpn: Vec<String>,
}

/// One listener's TLS as the cores serve it: a server config per certificate, found by SNI.
pub struct ServerTls {
    names: HostIndex,
    configs: Vec<Arc<ServerConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTls({} certificates)", self.configs.len())
    }
}

impl ServerTls {
    /// Builds a listener's server configs. Session tickets come from `tickets`, so that they
    /// survive the reload that calls this.
    pub fn new(listener: &str, s: &ServerSettings, tickets: &Tickets) -> Result<ServerTls, String> {
        let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let alpn: Vec<Vec<u8>> = s.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let mut names = HostIndex::default();
        let mut configs = Vec::with_capacity(s.certificates.len());
        for (i, served) in s.certificates.iter().enumerate() {
            for name in &served.server_names {
                names.insert(name, i as u32);
            }
            let builder = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .map_err(|e| e.to_string())?;
            let (builder, policy) = match &served.client_auth {
                None => (builder.with_no_client_auth(), "none".to_owned()),
                Some(auth) => {
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        auth.ca.roots.clone(),
                        provider(),
                    );
                    let verifier = match auth.mode {
                        ClientAuthMode::Required => verifier,
                        ClientAuthMode::Optional => verifier.allow_unauthenticated(),
                    }
                    .build()
                    .map_err(|e| format!("client certificate verifier: {e}"))?;
                    let policy = format!("{:?}:{}", auth.mode, hex(&auth.ca.fingerprint));
                    (builder.with_client_cert_verifier(verifier), policy)
                }
            };
            let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(
                served.certificate.key.clone(),
            )));
            config.alpn_protocols = alpn.clone();
            // The server's order (see `provider`): a scanner rightly flags a server that lets
            // the client pick, and clients' orders differ for no reason of ours.
            config.ignore_client_order = true;
            // Resumption through tickets only: a per-core session cache would miss whenever
            // SO_REUSEPORT sends the client to another core. TLS 1.2 gets tickets too.
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.ticketer = tickets.get(format!("{listener}/{policy}"))?;
            // 0-RTT stays off (rustls's default): early data can be replayed.
            config.max_early_data_size = 0;
            configs.push(Arc::new(config));
        }
        Ok(ServerTls { names, configs })
    }

    /// The server config for a ClientHello's SNI name (none: the default certificate's).
    fn config_for(&self, sni: Option<&str>) -> Option<&Arc<ServerConfig>> {
        let index = match sni {
            Some(name) => self.names.find(name.as_bytes()),
            None => self.names.fallback(),
        };
        self.configs.get(index? as usize)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---------------------------------------------------------------- accept

/// What a TLS handshake established, for routing, logging and forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The SNI name the client sent.
    pub sni: Option<Box<str>>,
    /// The application protocol ALPN agreed on.
    pub alpn: Option<Box<[u8]>>,
    pub version: &'static str,
    pub cipher: &'static str,
    /// Resumed from a session ticket (no certificate exchanged).
    pub resumed: bool,
    /// The client certificate, verified against the listener's CA.
    pub client: Option<Box<ClientIdentity>>,
}

/// A verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub subject: String,
    /// Subject alternative names as `DNS=..`, `URI=..`, `IP=..`, `email=..`.
    pub sans: Vec<String>,
    /// SHA-256 of the certificate (DER), hex.
    pub hash: String,
}

impl ClientIdentity {
    /// The value of an `x-forwarded-client-cert`-style header, in Envoy's format:
    /// `Hash=<hex>;Subject="<dn>";URI=<uri>;DNS=<name>`. Quotes and backslashes in the subject
    /// are escaped; nothing in it can be a control character (it comes from a parsed DN).
    pub fn header_value(&self) -> String {
        let mut v = format!("Hash={}", self.hash);
        let subject: String = self
            .subject
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        v.push_str(&format!(";Subject=\"{subject}\""));
        for san in &self.sans {
            if let Some(uri) = san.strip_prefix("URI=") {
                v.push_str(&format!(";URI={}", uri.replace([';', ',', '"'], "")));
            } else if let Some(dns) = san.strip_prefix("DNS=") {
                v.push_str(&format!(";DNS={}", dns.replace([';', ',', '"'], "")));
            }
        }
        v.retain(|c| !c.is_control());
        v
    }
}

fn client_identity(der: &[u8]) -> Option<ClientIdentity> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(format!("DNS={d}")),
                GeneralName::URI(u) => sans.push(format!("URI={u}")),
                GeneralName::RFC822Name(e) => sans.push(format!("email={e}")),
                GeneralName::IPAddress(ip) => {
                    let ip = match ip.len() {
                        4 => <[u8; 4]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*ip).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP={ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Some(ClientIdentity {
        subject: cert.subject().to_string(),
        sans,
        hash: hex(&sha256(&[der])),
    })
}

/// Why a TLS connection was refused before it carried a request.
#[derive(Debug)]
pub enum Refused {
    /// The client spoke plaintext HTTP (it was told so).
    Plaintext,
    /// The ClientHello passed [`MAX_CLIENT_HELLO`].
    HelloTooLarge,
    /// No certificate for the SNI name, and no default (`unrecognized_name`).
    NoCertificate,
    /// A required client certificate was not sent.
    NoClientCertificate,
    /// The client certificate did not verify.
    BadClientCertificate,
    /// Any other handshake failure (no common version or cipher, a bad message).
    Handshake(String),
    /// The client closed (or reset) during the handshake.
    Closed,
}

/// A fatal `unrecognized_name` alert (RFC 6066 §3) as a plaintext TLS record: sent when no
/// certificate serves the requested name.
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

/// Told to a client that sends plaintext HTTP to a TLS port, before the close.
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
content-length: 42\r\nconnection: close\r\n\r\nplain HTTP request sent to a TLS listener\n";

/// Reads the ClientHello, picks the certificate (and with it the client-auth policy) for its
/// SNI name, and completes the handshake. The caller bounds the time it takes.
pub async fn accept(tcp: TcpStream, tls: &ServerTls) -> Result<(TlsStream, TlsInfo), Refused> {
    let mut acceptor = Acceptor::default();
    let mut fed = 0;
    let accepted = loop {
        let bytes = match read_ciphertext(&tcp).await {
            Ok(Some(bytes)) => bytes,
            _ => return Err(Refused::Closed),
        };
        // A TLS record starts with its content type (22 for a handshake); a letter is the
        // first byte of an HTTP method.
        if fed == 0 && bytes[0].is_ascii_alphabetic() {
            let mut answer = PLAINTEXT_ANSWER.to_vec();
            let _ = tcp.write_all(&mut answer).await;
            let _ = Stream::shutdown(&tcp).await;
            return Err(Refused::Plaintext);
        }
        fed += bytes.len();
        if fed > MAX_CLIENT_HELLO {
            return Err(Refused::HelloTooLarge);
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            if acceptor.read_tls(&mut rest).is_err() {
                return Err(Refused::HelloTooLarge);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {}
            Err((e, alert)) => {
                send_alert(&tcp, |out| {
                    let mut alert = alert;
                    alert.write_all(out)
                })
                .await;
                return Err(Refused::Handshake(e.to_string()));
            }
        }
    };
    let sni: Option<Box<str>> = accepted.client_hello().server_name().map(Box::from);
    let Some(config) = tls.config_for(sni.as_deref()) else {
        let mut alert = UNRECOGNIZED_NAME.to_vec();
        let _ = tcp.write_all(&mut alert).await;
        return Err(Refused::NoCertificate);
    };
    let conn = match accepted.into_connection(config.clone()) {
        Ok(conn) => conn,
        Err((e, alert)) => {
            send_alert(&tcp, |out| {
                let mut alert = alert;
                alert.write_all(out)
            })
            .await;
            return Err(Refused::Handshake(e.to_string()));
        }
    };
    let stream = TlsStream::new(tcp, Connection::Server(conn));
    stream.handshake().await.map_err(refusal)?;
    let info = stream.info(sni);
    Ok((stream, info))
}

/// Sorts a handshake failure into the reasons counted.
fn refusal(e: io::Error) -> Refused {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return Refused::Closed;
    };
    match tls {
        rustls::Error::NoCertificatesPresented => Refused::NoClientCertificate,
        rustls::Error::InvalidCertificate(_) => Refused::BadClientCertificate,
        other => Refused::Handshake(other.to_string()),
    }
}

/// Writes what `alert` produces (a TLS alert record), best effort: the connection closes next.
async fn send_alert(tcp: &TcpStream, alert: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
    let mut out = Vec::new();
    if alert(&mut out).is_ok() && !out.is_empty() {
        let _ = tcp.write_all(&mut out).await;
    }
}

/// Reads ciphertext: into a buffer of the core's ring, or an owned one when the ring is empty.
async fn read_ciphertext(tcp: &TcpStream) -> io::Result<Option<Received>> {
    match tcp.read_pooled().await {
        Err(e) if rt::out_of_buffers(&e) => {
            let mut buf = rt::take_buffer();
            match tcp.read_some(&mut buf, rt::RING_BUFFER_SIZE).await? {
                0 => Ok(None),
                _ => Ok(Some(Received::Owned(buf))),
            }
        }
        other => other,
    }
}

// ---------------------------------------------------------------- upstream (client) configs

/// What a cluster's `tls` says, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Server name sent and verified; None: the endpoint's address (verified as an IP SAN).
    pub sni: Option<String>,
    /// Trust anchors; None: the system's roots.
    pub ca: Option<CaBundle>,
    /// false: any certificate is accepted (`verify: false`, insecure, for tests and labs).
    pub verify: bool,
    pub client_certificate: Option<Certificate>,
    pub alpn: Vec<String>,
}

/// A cluster's TLS client config.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    sni: Option<ServerName<'static>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientTls({:?})", self.sni)
    }
}

/// The system's trust anchors, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            Arc::new(roots)
        })
        .clone()
}

impl ClientTls {
    pub fn new(s: &ClientSettings) -> Result<ClientTls, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = if s.verify {
            let roots = match &s.ca {
                Some(ca) => ca.roots.clone(),
                None => system_roots(),
            };
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        };
        let mut config = match &s.client_certificate {
            Some(c) => {
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(c.key.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = s.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let sni = match &s.sni {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| format!("invalid server name {name:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(ClientTls {
            config: Arc::new(config),
            sni,
        })
    }

    /// Runs the client handshake on a connected socket to `addr`.
    pub async fn connect(&self, tcp: TcpStream, addr: std::net::IpAddr) -> io::Result<TlsStream> {
        let name = self
            .sni
            .clone()
            .unwrap_or(ServerName::IpAddress(addr.into()));
        let conn = rustls::ClientConnection::new(self.config.clone(), name).map_err(io_error)?;
        let stream = TlsStream::new(tcp, Connection::Client(conn));
        stream.handshake().await?;
        Ok(stream)
    }
}

/// `verify: false`: accepts any server certificate, still checking the handshake signatures
/// (so the peer holds the key of the certificate it sent, whatever that is).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

// ---------------------------------------------------------------- the stream

/// A TLS session over a TCP stream. Cloning shares the session (an upstream connection's armed
/// read holds a clone).
#[derive(Clone)]
pub struct TlsStream(Rc<Session>);

struct Session {
    tcp: TcpStream,
    tls: RefCell<Connection>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TlsStream").field(&self.0.tcp).finish()
    }
}

/// What the plaintext side of a session has for a reader.
enum Plain {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing yet: more ciphertext is needed.
    Empty,
    /// close_notify: the peer will send nothing more.
    Closed,
}

impl TlsStream {
    /// Whether ALPN agreed on HTTP/2.
    pub fn agreed_h2(&self) -> bool {
        self.0.tls.borrow().alpn_protocol() == Some(b"h2")
    }

    fn new(tcp: TcpStream, tls: Connection) -> TlsStream {
        TlsStream(Rc::new(Session {
            tcp,
            tls: RefCell::new(tls),
        }))
    }

    /// Drives the handshake to its end, then sends what it left queued (session tickets).
    async fn handshake(&self) -> io::Result<()> {
        loop {
            self.flush().await?;
            if !self.0.tls.borrow().is_handshaking() {
                return Ok(());
            }
            match read_ciphertext(&self.0.tcp).await? {
                Some(bytes) => {
                    if let Err(e) = self.feed(&bytes, None) {
                        // The alert rustls queued tells the peer why.
                        let _ = self.flush().await;
                        return Err(e);
                    }
                }
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    }

    fn info(&self, sni: Option<Box<str>>) -> TlsInfo {
        let tls = self.0.tls.borrow();
        let client = tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| client_identity(leaf))
            .map(Box::new);
        TlsInfo {
            sni,
            alpn: tls.alpn_protocol().map(Box::from),
            version: tls
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            cipher: tls
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("?"),
            resumed: tls.handshake_kind() == Some(HandshakeKind::Resumed),
            client,
        }
    }

    /// Hands ciphertext to the session, decrypting what completes a record; the plaintext is
    /// appended to `out` as it comes (or stays in the session without `out`). An error leaves
    /// its alert queued for the writer.
    fn feed(&self, mut bytes: &[u8], mut out: Option<&mut Vec<u8>>) -> io::Result<()> {
        let mut tls = self.0.tls.borrow_mut();
        let mut stalled = false;
        while !bytes.is_empty() {
            // Refused (Err) while undelivered plaintext fills the session (taken below); 0 after
            // the peer's close_notify.
            let taken = tls.read_tls(&mut bytes).unwrap_or(0);
            tls.process_new_packets().map_err(io_error)?;
            if let Some(out) = out.as_deref_mut() {
                take_plain(&mut tls, out)?;
            }
            if taken == 0 {
                if out.is_none() {
                    // Handshaking, with the session's plaintext buffer full: more application
                    // data came with the last flight than a session holds. Never dropped
                    // silently.
                    return Err(io::Error::other(
                        "more application data during the handshake than a session holds",
                    ));
                }
                if stalled {
                    // After close_notify: what follows is ignored.
                    break;
                }
                stalled = true;
            }
        }
        Ok(())
    }

    /// Appends to `out` the plaintext the session holds.
    fn take_plain(&self, out: &mut Vec<u8>) -> io::Result<Plain> {
        take_plain(&mut self.0.tls.borrow_mut(), out)
    }

    /// Sends whatever the session has queued (handshake messages, alerts, tickets).
    async fn flush(&self) -> io::Result<()> {
        let mut out = Vec::new();
        {
            let mut tls = self.0.tls.borrow_mut();
            while tls.wants_write() {
                if out.capacity() == 0 {
                    out = rt::take_buffer();
                }
                tls.write_tls(&mut out)?;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let res = self.0.tcp.write_all(&mut out).await;
        rt::recycle_buffer(out);
        res
    }

    /// Reads ciphertext until the session yields plaintext (appended to `out`) or ends.
    async fn read_plain(&self, out: &mut Vec<u8>) -> io::Result<Plain> {
        let start = out.len();
        loop {
            match self.take_plain(out)? {
                Plain::Empty => {}
                done => return Ok(done),
            }
            match read_ciphertext(&self.0.tcp).await? {
                Some(bytes) => self.feed(&bytes, Some(out))?,
                None => {
                    // End of stream: rustls tells a close_notify from a truncation.
                    let mut tls = self.0.tls.borrow_mut();
                    let _ = tls.read_tls(&mut &[][..]);
                    return match take_plain(&mut tls, out)? {
                        Plain::Empty => Err(io::ErrorKind::UnexpectedEof.into()),
                        done => Ok(done),
                    };
                }
            }
            if out.len() > start {
                return Ok(Plain::Data(out.len() - start));
            }
        }
    }
}

/// Moves the session's plaintext into `out`.
fn take_plain(tls: &mut Connection, out: &mut Vec<u8>) -> io::Result<Plain> {
    let mut reader = tls.reader();
    let mut n = 0;
    loop {
        match reader.fill_buf() {
            Ok([]) => return Ok(if n > 0 { Plain::Data(n) } else { Plain::Closed }),
            Ok(chunk) => {
                let len = chunk.len();
                if out.capacity() == 0 {
                    *out = rt::take_buffer();
                }
                out.extend_from_slice(chunk);
                reader.consume(len);
                n += len;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(if n > 0 { Plain::Data(n) } else { Plain::Empty });
            }
            Err(_) if n > 0 => return Ok(Plain::Data(n)),
            Err(e) => return Err(e),
        }
    }
}

impl Stream for TlsStream {
    async fn read_pooled(&self) -> io::Result<Option<Received>> {
        // Empty while waiting: ciphertext lands in the ring, and the plaintext gets a buffer
        // only once there is some.
        let mut out = Vec::new();
        match self.read_plain(&mut out).await {
            Ok(Plain::Data(_)) => Ok(Some(Received::Owned(out))),
            // Closed, with or without close_notify: either way the wait ends quietly.
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read_some(&self, buf: &mut Vec<u8>, min_spare: usize) -> io::Result<usize> {
        if buf.capacity() - buf.len() < min_spare {
            buf.reserve(min_spare);
        }
        match self.read_plain(buf).await? {
            Plain::Data(n) => Ok(n),
            Plain::Empty | Plain::Closed => Ok(0),
        }
    }

    async fn write_kept(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut out = rt::take_buffer();
        {
            let mut tls = self.0.tls.borrow_mut();
            let mut rest = &buf[..];
            loop {
                let n = tls.writer().write(rest)?;
                rest = &rest[n..];
                // Drained after each piece, so the session's send buffer never fills.
                while tls.wants_write() {
                    tls.write_tls(&mut out)?;
                }
                if rest.is_empty() {
                    break;
                }
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
            }
        }
        let res = self.0.tcp.write_all(&mut out).await;
        rt::recycle_buffer(out);
        res
    }

    async fn shutdown(&self) -> io::Result<()> {
        self.0.tls.borrow_mut().send_close_notify();
        self.flush().await?;
        Stream::shutdown(&self.0.tcp).await
    }

    fn abort(&self) {
        self.0.tcp.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_certificate_header_cannot_be_broken_out_of() {
        let id = ClientIdentity {
            subject: "CN=a\"b\\c,O=x\r\ny".to_owned(),
            sans: vec![
                "URI=spiffe://t/a;Hash=evil".to_owned(),
                "DNS=a.test,b".to_owned(),
                "email=a@b".to_owned(),
            ],
            hash: "00ff".to_owned(),
        };
        assert_eq!(
            id.header_value(),
            "Hash=00ff;Subject=\"CN=a\\\"b\\\\c,O=xy\";URI=spiffe://t/aHash=evil;DNS=a.testb"
        );
    }

    #[test]
    fn expiry_warnings_start_thirty_days_out() {
        let dir = std::env::temp_dir().join(format!("coregate-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("c.key"), key.serialize_pem()).unwrap();
        let loaded = load_certificate(&dir.join("c.pem"), &dir.join("c.key")).unwrap();
        let end = loaded.not_after;
        assert!(loaded.expiry_warning(end - 31 * 86_400, 30).is_none());
        let soon = loaded.expiry_warning(end - 29 * 86_400, 30).unwrap();
        assert!(soon.contains("expires in 29 days"), "{soon}");
        let past = loaded.expiry_warning(end + 1, 30).unwrap();
        assert!(past.contains("expired on"), "{past}");
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.join("o.key"), other.serialize_pem()).unwrap();
        let (field, why) = load_certificate(&dir.join("c.pem"), &dir.join("o.key")).unwrap_err();
        assert_eq!(field, "key");
        assert!(why.contains("does not match"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
