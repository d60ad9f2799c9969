//! TLS fixtures: self-signed certificates written to files (rcgen, no `openssl` process), and
//! `curl` over https — a TLS client that checks the chain against a given CA, speaks HTTP/2 by
//! ALPN and reports what it negotiated.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::run_cmd;

/// A self-signed certificate and its key, as PEM files in a directory of the caller's.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate (it is also its own CA: pass it as `--cacert`).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// The certificate's PEM text.
    pub pem: String,
}

impl TestCert {
    /// A certificate for `names` (DNS names; `127.0.0.1` works as an IP name) in `dir/stem.*`.
    pub fn generate(dir: &Path, stem: &str, names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        let pem = c.cert.pem();
        std::fs::write(&cert, &pem).expect("write cert");
        std::fs::write(&key, c.key_pair.serialize_pem()).expect("write key");
        TestCert { cert, key, pem }
    }

    /// Write this certificate's files over `other`'s paths (rename, as deploy tools do).
    pub fn install_as(&self, other: &TestCert) {
        for (from, to) in [(&self.cert, &other.cert), (&self.key, &other.key)] {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).expect("copy");
            std::fs::rename(&tmp, to).expect("rename");
        }
    }
}

/// What one `curl` request over https saw.
#[derive(Debug, Clone)]
pub struct CurlReply {
    /// curl's exit code (0: transfer done; 60: the peer's certificate did not verify).
    pub exit: i32,
    /// HTTP status (0 when there was no response).
    pub status: u16,
    /// `1.1` or `2`.
    pub http_version: String,
    /// Response headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: String,
}

impl CurlReply {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl` to `url` with `name` resolved to 127.0.0.1 (so SNI says `name`), trusting `ca`;
/// `extra` adds curl arguments (`--http1.1`, `-X POST`, `--data …`).
pub fn curl(
    url: &str,
    resolve: Option<(&str, u16)>,
    ca: Option<&Path>,
    extra: &[&str],
) -> CurlReply {
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = dir.path().join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-o", "-", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code} %{http_version}"]);
    if let Some((name, port)) = resolve {
        cmd.arg("--resolve").arg(format!("{name}:{port}:127.0.0.1"));
    }
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.args(extra).arg(url);
    let (exit, out, _err) = run_cmd(cmd, Duration::from_secs(15));
    let (body, trailer) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    let mut t = trailer.split_whitespace();
    let status = t.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = t.next().unwrap_or("").to_string();
    let headers = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    CurlReply {
        exit,
        status,
        http_version,
        headers,
        body: body.to_string(),
    }
}
