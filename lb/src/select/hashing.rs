//! Consistent hashing (ketama, via pingora-ketama) over the ready backends, for the `hash`
//! policy. The ring is rebuilt only when the set of ready backends changes.

use std::sync::{Arc, Mutex};

use pingora_ketama::{Bucket, Continuum};

use crate::backends::Backend;

/// A cached ketama ring.
#[derive(Default)]
pub struct HashRing {
    cache: Mutex<Option<(String, Arc<Continuum>)>>,
}

impl HashRing {
    /// The backend `key` maps to among `ready`.
    pub fn pick(&self, ready: &[Arc<Backend>], key: &[u8]) -> Option<Arc<Backend>> {
        let signature: String = ready
            .iter()
            .map(|b| format!("{}@{}*{};", b.id, b.addr, b.weight()))
            .collect();
        let ring = {
            let mut cache = self.cache.lock().ok()?;
            match cache.as_ref() {
                Some((sig, ring)) if *sig == signature => ring.clone(),
                _ => {
                    let buckets: Vec<Bucket> = ready
                        .iter()
                        .map(|b| Bucket::new(b.addr, b.weight()))
                        .collect();
                    let ring = Arc::new(Continuum::new(&buckets));
                    *cache = Some((signature, ring.clone()));
                    ring
                }
            }
        };
        let addr = ring.node(key)?;
        ready.iter().find(|b| b.addr == addr).cloned()
    }
}
