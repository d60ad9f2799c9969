//! CA certificates from PEM, as rustls trust anchors: the one reader behind every "trust this
//! CA file" option (iogate-lb's `upstream_tls.ca_file`, iogate-node's `redis.tls.ca_file`,
//! iogate-loadtest's `--ca`), so they accept and refuse the same files with the same words.

/// The CA certificates in `pem` (one or more `CERTIFICATE` blocks). An error says what is wrong
/// in words fit for a config error: not PEM, not a usable CA certificate, no certificate.
pub fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::roots_from_pem;

    #[test]
    fn empty_and_garbage_are_refused() {
        assert_eq!(
            roots_from_pem(b"").err().as_deref(),
            Some("holds no certificate")
        );
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            roots_from_pem(key_only).err().as_deref(),
            Some("holds no certificate")
        );
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(roots_from_pem(broken).is_err());
    }
}
