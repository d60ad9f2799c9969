//! Active health checks: an HTTP GET of `health.active.path` on every backend each interval,
//! with rise/fall hysteresis. A backend added at start-up or by a reload takes no sessions until
//! its first check passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backends::Backend;
use crate::proxy::Lb;

/// One check: `Ok(detail)` for a 2xx, `Err(detail)` otherwise.
pub async fn check(b: &Backend, path: &str, timeout: Duration) -> Result<String, String> {
    let fut = async {
        let mut s = TcpStream::connect(b.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: iogate-lb-health\r\nConnection: close\r\n\r\n",
            b.addr
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 256];
        let mut n = 0;
        while n < 12 {
            let r = s
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "no HTTP status".to_string())?;
        if (200..300).contains(&code) {
            Ok(format!("HTTP {code}"))
        } else {
            Err(format!("HTTP {code}"))
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {timeout:?}")),
    }
}

/// Check every backend forever (until the task is dropped).
pub async fn run(lb: Arc<Lb>) {
    let mut streaks: HashMap<String, i64> = HashMap::new();
    loop {
        let cfg = lb.config.load_full();
        let a = cfg.health.active.clone();
        if !a.enabled {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let backends = lb.registry.all();
        let checks = backends.iter().map(|b| {
            let b = b.clone();
            let path = a.path.clone();
            tokio::spawn(async move {
                let r = check(&b, &path, a.timeout).await;
                (b, r)
            })
        });
        let results: Vec<_> = futures_join(checks.collect()).await;
        for (b, r) in results {
            let streak = streaks.entry(b.id.clone()).or_insert(0);
            let (ok, detail) = match r {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            if b.record_check(ok, detail.clone(), a.rise, a.fall, streak) {
                if ok {
                    tracing::info!(backend = %b.id, %detail, "backend is up");
                } else {
                    tracing::warn!(backend = %b.id, %detail, "backend is down");
                }
            }
        }
        streaks.retain(|id, _| backends.iter().any(|b| b.id == *id));
        tokio::time::sleep(a.interval).await;
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
