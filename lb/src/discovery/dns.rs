//! Asking DNS: the resolver built from the `resolver` section, and one resolution of an
//! upstream's name turned into an [`Answer`].
//!
//! The resolver keeps no cache of its own (the TTLs drive [`super::name::NameState`] instead)
//! and asks for A and AAAA records both, so a dual-stack name gives every address. With no
//! servers configured it reads the system's configuration (`/etc/resolv.conf`: its servers,
//! search domains and `ndots`, so a Kubernetes Service's short name works) and `/etc/hosts`;
//! with servers configured it asks only them, like nginx's `resolver`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::name::{Answer, Found};
use crate::config::{self, Upstream};

/// Build the resolver of `r`.
pub fn build(r: &config::Resolver) -> Result<TokioResolver, ResolveError> {
    let mut builder = if r.servers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers: Vec<NameServerConfig> = r
            .server_addrs()
            .into_iter()
            .flat_map(|a| {
                [
                    NameServerConfig::new(a, Protocol::Udp),
                    NameServerConfig::new(a, Protocol::Tcp),
                ]
            })
            .collect();
        let mut b = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioConnectionProvider::default(),
        );
        b.options_mut().use_hosts_file = ResolveHosts::Never;
        b
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = r.timeout;
    opts.attempts = 1;
    Ok(builder.build())
}

/// Resolve `u` (a `NAME:port` address or an SRV name), within `timeout`.
pub async fn resolve(resolver: &TokioResolver, u: &Upstream, timeout: Duration) -> Answer {
    let lookup = async {
        match &u.srv {
            Some(name) => srv(resolver, name, u.weight).await,
            None => match config::split_name_port(&u.address) {
                Some((name, port)) => addresses(resolver, name, port, u.weight).await,
                None => Answer::Failed(format!("`{}` is not NAME:port", u.address)),
            },
        }
    };
    match tokio::time::timeout(timeout, lookup).await {
        Ok(answer) => answer,
        Err(_) => Answer::Failed(format!("no answer within {timeout:?}")),
    }
}

fn failed(e: ResolveError) -> Answer {
    if e.is_no_records_found() {
        Answer::Empty(e.to_string())
    } else {
        Answer::Failed(e.to_string())
    }
}

fn ttl_of(valid_until: Instant) -> Duration {
    valid_until.saturating_duration_since(Instant::now())
}

async fn addresses(resolver: &TokioResolver, name: &str, port: u16, weight: u32) -> Answer {
    match resolver.lookup_ip(name).await {
        Ok(ips) => {
            let addrs: Vec<Found> = ips
                .iter()
                .map(|ip| (SocketAddr::new(ip, port), weight))
                .collect();
            if addrs.is_empty() {
                Answer::Empty(format!("{name}: no A or AAAA records"))
            } else {
                Answer::Records {
                    addrs,
                    ttl: ttl_of(ips.valid_until()),
                }
            }
        }
        Err(e) => failed(e),
    }
}

/// The targets of the records with the lowest priority value (the others are backups in SRV's
/// sense; iogate-lb has no backup tier), each resolved to its addresses. A target that does not
/// resolve for lack of records is no backend; one that gets no answer fails the whole name, so
/// the last good set stays rather than losing that target's backends.
async fn srv(resolver: &TokioResolver, name: &str, weight: u32) -> Answer {
    let records = match resolver.srv_lookup(name).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let mut ttl = ttl_of(records.as_lookup().valid_until());
    let Some(best) = records.iter().map(|s| s.priority()).min() else {
        return Answer::Empty(format!("{name}: no SRV records"));
    };
    let mut addrs = Vec::new();
    for rec in records.iter().filter(|s| s.priority() == best) {
        // "." means the service is decidedly not available at this domain (RFC 2782).
        if rec.target().is_root() {
            continue;
        }
        let w = match rec.weight() {
            0 => weight,
            w => u32::from(w).min(1000),
        };
        match resolver.lookup_ip(rec.target().clone()).await {
            Ok(ips) => {
                ttl = ttl.min(ttl_of(ips.valid_until()));
                addrs.extend(ips.iter().map(|ip| (SocketAddr::new(ip, rec.port()), w)));
            }
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Answer::Failed(format!("SRV target {}: {e}", rec.target())),
        }
    }
    if addrs.is_empty() {
        Answer::Empty(format!("{name}: no SRV target has an address"))
    } else {
        Answer::Records { addrs, ttl }
    }
}
