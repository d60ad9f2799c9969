//! A real DNS server on loopback: Debian's dnsmasq, authoritative for the `test.` domain only,
//! answering A records from a hosts file the test rewrites (`--addn-hosts`, re-read on SIGHUP)
//! and SRV records fixed at start. TTLs are 0, so a resolver honouring them asks again at once.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Proc, free_port, wait_for};

/// One SRV record: name, target, port, priority, weight.
pub type SrvRecord<'a> = (&'a str, &'a str, u16, u16, u16);

/// A running dnsmasq.
pub struct Dnsmasq {
    /// Its UDP and TCP port on 127.0.0.1.
    pub port: u16,
    child: Proc,
    hosts: PathBuf,
    srv: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Start with `hosts` (`(ip, name)`, names under `.test`) and SRV records; wait until it
    /// answers.
    pub fn start(hosts: &[(&str, &str)], srv: &[SrvRecord]) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        // dnsmasq started as root reads the hosts file as `nobody` after a SIGHUP.
        set_mode(dir.path(), 0o755);
        let hosts_file = dir.path().join("hosts");
        let srv: Vec<String> = srv
            .iter()
            .map(|(name, target, port, prio, weight)| {
                format!("--srv-host={name},{target},{port},{prio},{weight}")
            })
            .collect();
        write_hosts(&hosts_file, hosts);
        let port = free_port();
        Dnsmasq {
            port,
            child: launch(&hosts_file, &srv, port),
            hosts: hosts_file,
            srv,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`, for `resolver.servers` / `--resolver`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn launch(hosts: &std::path::Path, srv: &[String], port: u16) -> Proc {
    let child = Command::new("dnsmasq")
        .arg("--keep-in-foreground")
        .arg("--conf-file=/dev/null")
        .arg("--no-resolv")
        .arg("--no-hosts")
        .arg("--no-negcache")
        .arg("--local=/test/")
        .arg("--listen-address=127.0.0.1")
        .arg("--bind-interfaces")
        .arg(format!("--port={port}"))
        .arg("--local-ttl=0")
        .arg("--pid-file=")
        .arg(format!("--addn-hosts={}", hosts.display()))
        .args(srv)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn dnsmasq (Debian package dnsmasq-base)");
    let child = Proc(child);
    wait_for(Duration::from_secs(10), "dnsmasq answering", || {
        query_a(port, "ready-probe.test").map(|_| ())
    });
    child
}

fn write_hosts(path: &std::path::Path, hosts: &[(&str, &str)]) {
    let text: String = hosts
        .iter()
        .map(|(ip, name)| format!("{ip} {name}\n"))
        .collect();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write hosts");
    set_mode(&tmp, 0o644);
    std::fs::rename(&tmp, path).expect("replace hosts");
}

impl Dnsmasq {
    /// Replace the A records (SIGHUP makes dnsmasq re-read them); returns once dnsmasq answers
    /// `name` with exactly the new addresses of `name`.
    pub fn set_hosts(&self, hosts: &[(&str, &str)], name: &str) {
        write_hosts(&self.hosts, hosts);
        self.child.signal("HUP");
        let mut want: Vec<Ipv4Addr> = hosts
            .iter()
            .filter(|(_, n)| *n == name)
            .filter_map(|(ip, _)| ip.parse().ok())
            .collect();
        want.sort();
        wait_for(
            Duration::from_secs(10),
            "dnsmasq serving the new hosts",
            || {
                let mut got = query_a(self.port, name)?;
                got.sort();
                (got == want).then_some(())
            },
        );
    }

    /// Stop answering (the process is killed; the port stays free for [`Dnsmasq::restart`]).
    pub fn stop(&mut self) {
        self.child.signal("KILL");
        let _ = self.child.0.wait();
    }

    /// Start again on the same port with the hosts file as it is.
    pub fn restart(&mut self) {
        self.child = launch(&self.hosts, &self.srv, self.port);
    }

    /// The A records of `name`, as this server answers them now.
    pub fn a(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        query_a(self.port, name)
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Ask `127.0.0.1:port` for the A records of `name` over UDP: `None` without an answer,
/// `Some([])` for NXDOMAIN or no records.
pub fn query_a(port: u16, name: &str) -> Option<Vec<Ipv4Addr>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let id: u16 = rand_id();
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).ok()?);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    sock.send_to(&q, ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).ok()?;
    let r = &buf[..n];
    if r.len() < 12 || r[..2] != id.to_be_bytes() {
        return None;
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let mut at = 12;
    at = skip_name(r, at)? + 4; // the question
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(r, at)?;
        let rtype = u16::from_be_bytes([*r.get(at)?, *r.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*r.get(at + 8)?, *r.get(at + 9)?]));
        let data = r.get(at + 10..at + 10 + len)?;
        if rtype == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Some(out)
}

fn skip_name(r: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *r.get(at)?;
        if len & 0xC0 == 0xC0 {
            return Some(at + 2);
        }
        at += 1;
        if len == 0 {
            return Some(at);
        }
        at += usize::from(len);
    }
}

fn rand_id() -> u16 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(7, |d| (d.subsec_nanos() % 65521) as u16)
}
