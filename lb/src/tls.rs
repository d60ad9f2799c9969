//! TLS termination: the certificates of each TLS listener, chosen per connection by SNI and
//! replaced in place on reload.
//!
//! Contract:
//! - A listener's certificates are PEM files (`cert`: the chain, leaf first; `key`: PKCS#8,
//!   PKCS#1 or SEC1). Each certificate answers for the DNS names in its subjectAltName (its
//!   common name when it has none); `*.example.com` answers for one label under
//!   `example.com`. An exact name wins over a wildcard; a client without SNI, or naming no
//!   certificate's name, gets the listener's first certificate (nginx's default server).
//! - Loading is all or nothing and names the file and the field that failed: a certificate
//!   that does not parse, a key that is missing or does not sign with this provider, a key that
//!   does not belong to its certificate. Nothing is swapped until every certificate of every
//!   listener has loaded ([`TlsListeners::prepare`] then [`Prepared::commit`]), so a bad file
//!   leaves the certificates in force untouched.
//! - Handshakes read the current set through an [`ArcSwap`]: a reload changes what the next
//!   handshake gets, and live connections keep theirs (TLS sessions are not renegotiated).
//!
//! Why our own resolver rather than pingora's `TlsSettings::intermediate(cert, key)`: that
//! takes one certificate, panics on a bad file and cannot be reloaded without a restart.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CertificateFiles, Listener};

/// A certificate that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// Which field names it: `cert` or `key`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl TlsError {
    fn new(path: &Path, field: &'static str, message: impl Into<String>) -> TlsError {
        TlsError {
            path: path.to_path_buf(),
            field,
            message: message.into(),
        }
    }
}

/// One loaded certificate: its key material, names and expiry.
#[derive(Clone)]
pub struct Loaded {
    /// Chain and signing key, as rustls uses them.
    pub key: Arc<CertifiedKey>,
    /// The DNS names it answers for, lower case (`*.x` for wildcards).
    pub names: Vec<String>,
    /// The leaf's notAfter, seconds since the epoch.
    pub not_after: i64,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

fn provider(path: &Path) -> Result<Arc<CryptoProvider>, TlsError> {
    // rustls 0.23 needs a process-wide provider; pingora installs ring, and so do we (idempotent).
    pingora_rustls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| TlsError::new(path, "key", "no TLS crypto provider is installed"))
}

/// Read one certificate/key pair.
pub fn load_pair(files: &CertificateFiles) -> Result<Loaded, TlsError> {
    let read = |path: &Path, field| {
        std::fs::read(path).map_err(|e| TlsError::new(path, field, format!("cannot read: {e}")))
    };
    let cert_pem = read(&files.cert, "cert")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::new(&files.cert, "cert", format!("not a PEM certificate: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::new(
            &files.cert,
            "cert",
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    };
    let (names, not_after) = leaf_names(leaf).map_err(|m| TlsError::new(&files.cert, "cert", m))?;
    let key_pem = read(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError::new(
            &files.key,
            "key",
            format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
        )
    })?;
    let provider = provider(&files.key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        TlsError::new(
            &files.key,
            "key",
            format!("does not go with {}: {e}", files.cert.display()),
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after,
    })
}

/// The leaf's DNS names (subjectAltName, else the common name) and its notAfter.
fn leaf_names(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("the first certificate does not parse as X.509: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// The certificates of one listener, by name.
#[derive(Debug, Clone)]
pub struct SniCerts {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    certs: Vec<Loaded>,
}

impl SniCerts {
    /// Load every pair; the first is the default. `Err((index, error))` names the pair.
    pub fn load(files: &[CertificateFiles]) -> Result<SniCerts, (usize, TlsError)> {
        let mut certs = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            certs.push(load_pair(f).map_err(|e| (i, e))?);
        }
        Ok(SniCerts::from_loaded(certs))
    }

    /// Index loaded certificates by name; the first listed certificate wins a name two share.
    pub fn from_loaded(certs: Vec<Loaded>) -> SniCerts {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        SniCerts {
            exact,
            wildcard,
            certs,
        }
    }

    /// Which certificate answers `sni` (index into the configured list).
    pub fn pick(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return 0;
        };
        if let Some(i) = self.exact.get(&name) {
            return *i;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }

    /// The loaded certificates, in configured order.
    pub fn certs(&self) -> &[Loaded] {
        &self.certs
    }
}

/// The rustls certificate resolver of one listener; its certificates are swapped on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<SniCerts>,
}

impl CertResolver {
    /// A resolver serving `certs`.
    pub fn new(certs: SniCerts) -> CertResolver {
        CertResolver {
            current: ArcSwap::from_pointee(certs),
        }
    }

    /// The certificates in force.
    pub fn current(&self) -> Arc<SniCerts> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.current.load();
        let i = certs.pick(hello.server_name());
        certs.certs.get(i).map(|c| c.key.clone())
    }
}

/// The TLS listeners of the process: listener address → resolver. Fixed at start (listeners
/// change only on restart); their certificates change on reload.
#[derive(Debug, Default)]
pub struct TlsListeners {
    resolvers: Vec<(String, Arc<CertResolver>)>,
}

/// A config's certificates, loaded and waiting to be put in force.
#[derive(Debug)]
pub struct Prepared(Vec<(Arc<CertResolver>, SniCerts)>);

/// A certificate of `listeners[listener].tls.certificates[index]` failed to load.
#[derive(Debug, thiserror::Error)]
#[error("listeners[{listener}].tls.certificates[{index}].{}: {error}", error.field)]
pub struct ListenerTlsError {
    /// The listener's index.
    pub listener: usize,
    /// The certificate's index.
    pub index: usize,
    /// What failed.
    pub error: TlsError,
}

impl ListenerTlsError {
    /// The config field the error belongs to.
    pub fn field(&self) -> String {
        format!(
            "listeners[{}].tls.certificates[{}].{}",
            self.listener, self.index, self.error.field
        )
    }
}

/// Load the certificates of every TLS listener of a config (no effect on anything running).
pub fn load_all(listeners: &[Listener]) -> Result<Vec<Option<SniCerts>>, ListenerTlsError> {
    listeners
        .iter()
        .enumerate()
        .map(|(li, l)| match &l.tls {
            None => Ok(None),
            Some(t) => SniCerts::load(&t.certificates)
                .map(Some)
                .map_err(|(index, error)| ListenerTlsError {
                    listener: li,
                    index,
                    error,
                }),
        })
        .collect()
}

impl TlsListeners {
    /// Resolvers for the TLS listeners of a config at start.
    pub fn load(listeners: &[Listener]) -> Result<TlsListeners, ListenerTlsError> {
        let loaded = load_all(listeners)?;
        Ok(TlsListeners {
            resolvers: listeners
                .iter()
                .zip(loaded)
                .filter_map(|(l, c)| Some((l.address.clone(), Arc::new(CertResolver::new(c?)))))
                .collect(),
        })
    }

    /// The resolver of the listener at `address`.
    pub fn resolver(&self, address: &str) -> Option<Arc<CertResolver>> {
        self.resolvers
            .iter()
            .find(|(a, _)| a == address)
            .map(|(_, r)| r.clone())
    }

    /// Every listener's resolver.
    pub fn all(&self) -> &[(String, Arc<CertResolver>)] {
        &self.resolvers
    }

    /// Load the certificates a new config names for the listeners running now (a listener the
    /// new config adds or drops waits for a restart, like every listener change).
    pub fn prepare(&self, listeners: &[Listener]) -> Result<Prepared, ListenerTlsError> {
        let loaded = load_all(listeners)?;
        let mut out = Vec::new();
        for (l, certs) in listeners.iter().zip(loaded) {
            if let (Some(r), Some(c)) = (self.resolver(&l.address), certs) {
                out.push((r, c));
            }
        }
        Ok(Prepared(out))
    }
}

impl Prepared {
    /// Put the loaded certificates in force: the next handshakes use them.
    pub fn commit(self) {
        for (r, c) in self.0 {
            r.current.store(Arc::new(c));
        }
    }
}

/// Every certificate and key file the listeners name (watched for changes).
pub fn files(listeners: &[Listener]) -> Vec<PathBuf> {
    listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| t.certificates.iter())
        .flat_map(|c| [c.cert.clone(), c.key.clone()])
        .collect()
}

/// The CA certificates in a PEM file (`upstream_tls.ca_file`).
pub fn load_roots(path: &Path) -> Result<pingora_rustls::RootCertStore, TlsError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsError::new(path, "ca_file", format!("cannot read: {e}")))?;
    iogate_shared::tls::roots_from_pem(&pem).map_err(|m| TlsError::new(path, "ca_file", m))
}

/// TLS towards the backends for the health checks (the proxy's own connections go through
/// pingora's connector, given the same CA file): the same trust, the same name.
pub struct UpstreamClient {
    connector: pingora_rustls::TlsConnector,
    server_name: Option<String>,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl UpstreamClient {
    /// The client of `upstream_tls`, or `None` when it is off.
    pub fn new(cfg: &crate::config::UpstreamTls) -> Result<Option<UpstreamClient>, TlsError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let roots = match &cfg.ca_file {
            Some(ca) => load_roots(ca)?,
            None => {
                let mut roots = pingora_rustls::RootCertStore::empty();
                pingora_rustls::load_platform_certs_incl_env_into_store(&mut roots).map_err(
                    |e| {
                        TlsError::new(
                            Path::new("(system CA certificates)"),
                            "ca_file",
                            e.to_string(),
                        )
                    },
                )?;
                roots
            }
        };
        let provider = provider(Path::new("(upstream_tls)"))?;
        let mut config = pingora_rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new(Path::new("(upstream_tls)"), "ca_file", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(UpstreamClient {
            connector: pingora_rustls::TlsConnector::from(Arc::new(config)),
            server_name: cfg.server_name.clone(),
        }))
    }

    /// The name sent to and verified for the backend at `addr`.
    pub fn name_for(&self, addr: std::net::SocketAddr) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| addr.ip().to_string())
    }

    /// The TLS handshake over an open connection to `addr`.
    pub async fn connect(
        &self,
        tcp: tokio::net::TcpStream,
        addr: std::net::SocketAddr,
    ) -> Result<pingora_rustls::ClientTlsStream<tokio::net::TcpStream>, String> {
        let name = rustls_pki_types::ServerName::try_from(self.name_for(addr))
            .map_err(|e| format!("TLS name: {e}"))?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, written to `dir`.
    fn pair(dir: &Path, stem: &str, names: &[&str]) -> CertificateFiles {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let files = CertificateFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, c.cert.pem()).expect("write cert");
        std::fs::write(&files.key, c.key_pair.serialize_pem()).expect("write key");
        files
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = SniCerts::load(&[
            pair(d.path(), "default", &["default.test"]),
            pair(d.path(), "wild", &["*.example.test", "example.test"]),
            pair(d.path(), "api", &["api.example.test"]),
        ])
        .expect("load");
        assert_eq!(c.certs()[1].names, ["*.example.test", "example.test"]);
        assert!(c.certs()[0].not_after > 1_700_000_000);
        assert_eq!(c.pick(None), 0);
        assert_eq!(c.pick(Some("unknown.test")), 0);
        assert_eq!(c.pick(Some("example.test")), 1);
        assert_eq!(c.pick(Some("www.example.test")), 1);
        assert_eq!(
            c.pick(Some("API.Example.Test.")),
            2,
            "case and trailing dot"
        );
        // A wildcard covers one label only.
        assert_eq!(c.pick(Some("a.b.example.test")), 0);
    }

    #[test]
    fn a_name_two_certificates_share_goes_to_the_first_listed() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = SniCerts::load(&[
            pair(d.path(), "a", &["a.test"]),
            pair(d.path(), "ab", &["a.test", "b.test"]),
        ])
        .expect("load");
        assert_eq!(c.pick(Some("a.test")), 0);
        assert_eq!(c.pick(Some("b.test")), 1);
    }

    #[test]
    fn bad_files_are_named_with_their_field() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = pair(d.path(), "a", &["a.test"]);
        let b = pair(d.path(), "b", &["b.test"]);
        // A key that belongs to another certificate.
        let mixed = CertificateFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let (i, e) = SniCerts::load(&[a.clone(), mixed]).expect_err("mismatch");
        assert_eq!((i, e.field), (1, "key"));
        assert!(e.message.contains("does not go with"), "{e}");
        // The key file given as the certificate.
        let swapped = CertificateFiles {
            cert: a.key.clone(),
            key: a.key.clone(),
        };
        let (_, e) = SniCerts::load(&[swapped]).expect_err("no cert");
        assert_eq!(e.field, "cert");
        assert!(e.message.contains("no certificate"), "{e}");
        let missing = CertificateFiles {
            cert: d.path().join("nope.crt"),
            key: a.key.clone(),
        };
        let (_, e) = SniCerts::load(&[missing]).expect_err("missing");
        assert!(e.message.starts_with("cannot read"), "{e}");
        assert!(e.to_string().contains("nope.crt"), "{e}");
        std::fs::write(&b.key, "garbage").expect("write");
        let (_, e) = SniCerts::load(&[b]).expect_err("bad key");
        assert_eq!(e.field, "key");
    }
}
