//! The Redis side of connection state recovery: one stream per namespace holding every tracked
//! packet (the entry id is the offset), and one hash per session (owner socket, rooms, the
//! offset it connected at). Every command runs under `redis.command_timeout`, except the
//! reader's blocking `XREAD`, which has its own connection.
//!
//! The timeout is fred's own per-command one (`Options::timeout`), never an outer
//! `tokio::time::timeout`, and writes are separate commands, never a fred pipeline: a command
//! that times out while fred holds it (Redis down, reconnecting) is marked and never written,
//! whereas a dropped future or a timed-out pipeline stays queued and is written after the
//! reconnect — a session record put back into a restarted Redis whose stream lost the
//! session's history would let a client "recover" without the packets it missed. (A command
//! already written when it times out may still run: Redis gives no way to take it back.)
//!
//! Keys (with `redis.key_prefix` = `iogate`):
//! - `{iogate-csr}<ns>` — a namespace's stream. The hash tag puts every namespace's stream on
//!   one Redis Cluster slot, so one `XREAD` reads them all.
//! - `iogate-csr-session:<pid>` — a session: fields `owner` (the socket id holding it), `rooms`
//!   (JSON array), `at` (the stream offset the session started at). Its TTL is
//!   `max_disconnection` once the socket is gone, longer while it is connected (refreshed).
//!
//! Session writes are compare-and-set on `owner`: a socket that lost its session to a recovery
//! on another node (a zombie whose client already moved) can no longer overwrite or delete it.

use std::time::Duration;

use fred::prelude::{Client, ClientLike};
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand, Value as RValue};
use fred::util::redis_keyslot;

use super::offset::Offset;

/// A Redis command failed or timed out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The command did not answer in time: it may or may not have run.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or could not be reached.
    #[error("Redis: {0}")]
    Redis(String),
    /// An answer of an unexpected shape.
    #[error("unexpected Redis answer: {0}")]
    Shape(String),
}

impl From<fred::error::Error> for StoreError {
    fn from(e: fred::error::Error) -> Self {
        StoreError::Redis(e.to_string())
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Rooms (the session's own socket id room excluded: a new socket has a new id).
    pub rooms: Vec<String>,
    /// The offset the session started at.
    pub at: Offset,
}

/// What a stream's history says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamMarks {
    /// Entries up to this id may have been trimmed (recorded by [`Store::trim`]).
    pub trimmed: Offset,
    /// The last id the stream ever generated.
    pub last: Offset,
}

/// One write of the session table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionWrite {
    /// Set owner, rooms and start offset; TTL in ms. Only if the owner is unset or the same.
    Put {
        /// The session.
        pid: String,
        /// The socket id that holds it.
        owner: String,
        /// Its rooms.
        rooms: Vec<String>,
        /// Its start offset.
        at: Offset,
        /// Time to live.
        ttl: Duration,
    },
    /// Delete, if `owner` still holds it.
    Delete {
        /// The session.
        pid: String,
        /// The socket id that held it.
        owner: String,
    },
}

const PUT: &str = "local o = redis.call('HGET', KEYS[1], 'owner') \
if o and o ~= ARGV[1] then return 0 end \
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'rooms', ARGV[2], 'at', ARGV[3]) \
redis.call('PEXPIRE', KEYS[1], ARGV[4]) return 1";

const DELETE: &str = "if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then \
return redis.call('DEL', KEYS[1]) end return 0";

/// `SET key id` unless it holds a larger id already.
const RAISE: &str = "local function p(s) local a, b = string.match(s, '^(%d+)%-(%d+)$') \
return tonumber(a), tonumber(b) end \
local c = redis.call('GET', KEYS[1]) \
if c then local cm, cs = p(c) local nm, ns = p(ARGV[1]) \
if cm > nm or (cm == nm and cs >= ns) then return 0 end end \
redis.call('SET', KEYS[1], ARGV[1]) return 1";

const CLAIM: &str = "local h = redis.call('HGETALL', KEYS[1]) \
if #h == 0 then return false end \
redis.call('HSET', KEYS[1], 'owner', ARGV[1]) redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
return h";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Redis access for recovery.
#[derive(Clone)]
pub struct Store {
    client: Client,
    reader: Client,
    prefix: String,
    timeout: Duration,
}

/// A command routed (in a cluster) to the slot of `key`.
fn cmd(name: &'static str, key: &str, blocking: bool) -> CustomCommand {
    CustomCommand::new_static(
        name,
        ClusterHash::Custom(redis_keyslot(key.as_bytes())),
        blocking,
    )
}

/// Send commands together (in order) and wait for all: the first failure, if any.
async fn all_ok<F>(sends: impl IntoIterator<Item = F>) -> Result<(), StoreError>
where
    F: std::future::Future<Output = Result<RValue, StoreError>>,
{
    let results = futures_util::future::join_all(sends).await;
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn as_offset(v: &RValue) -> Result<Offset, StoreError> {
    let s = v
        .as_str()
        .ok_or_else(|| StoreError::Shape(format!("stream id {v:?}")))?;
    s.parse().map_err(|e| StoreError::Shape(format!("{e}")))
}

/// One stream entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// Its id: the offset.
    pub id: Offset,
    /// Which writer appended it and its place in that writer's order (`uid`, `n`).
    pub writer: Option<(String, u64)>,
    /// The encoded [`Entry`](super::entry::Entry).
    pub bytes: Vec<u8>,
}

/// The items of an array, or a map's keys and values in turn (RESP3 answers maps where RESP2
/// answered flat arrays).
fn flatten(v: RValue, what: &str) -> Result<Vec<RValue>, StoreError> {
    match v {
        RValue::Array(items) => Ok(items),
        RValue::Map(m) => Ok(m
            .inner()
            .into_iter()
            .flat_map(|(k, v)| [RValue::from(k), v])
            .collect()),
        other => Err(StoreError::Shape(format!("{what}: {other:?}"))),
    }
}

fn as_writer(v: &RValue) -> Option<(String, u64)> {
    let s = v.as_str()?;
    let (uid, n) = s.rsplit_once(':')?;
    Some((uid.to_string(), n.parse().ok()?))
}

/// `[id, [field, value, …]]` → the entry (fields `e`: bytes, `w`: writer).
fn as_entry(v: RValue) -> Result<StreamEntry, StoreError> {
    let RValue::Array(mut parts) = v else {
        return Err(StoreError::Shape("stream entry".into()));
    };
    if parts.len() != 2 {
        return Err(StoreError::Shape("stream entry".into()));
    }
    let fields = parts.pop().unwrap_or(RValue::Null);
    let id = as_offset(&parts[0])?;
    let fields = flatten(fields, "stream entry fields")?;
    let mut it = fields.into_iter();
    let (mut bytes, mut writer) = (None, None);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match k.as_str().as_deref() {
            Some("e") => {
                bytes = Some(
                    v.into_bytes()
                        .ok_or_else(|| StoreError::Shape("entry bytes".into()))?
                        .to_vec(),
                );
            }
            Some("w") => writer = as_writer(&v),
            _ => {}
        }
    }
    match bytes {
        Some(bytes) => Ok(StreamEntry { id, writer, bytes }),
        None => Err(StoreError::Shape("stream entry without field e".into())),
    }
}

fn as_entries(v: RValue) -> Result<Vec<StreamEntry>, StoreError> {
    match v {
        RValue::Null => Ok(Vec::new()),
        RValue::Array(items) => items.into_iter().map(as_entry).collect(),
        other => Err(StoreError::Shape(format!("entries {other:?}"))),
    }
}

impl Store {
    /// Recovery's Redis access: `client` for commands, `reader` (a connection of its own) for
    /// the blocking stream read.
    pub fn new(client: Client, reader: Client, key_prefix: &str, timeout: Duration) -> Store {
        Store {
            client,
            reader,
            prefix: key_prefix.to_string(),
            timeout,
        }
    }

    /// The commands client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The stream key of namespace `ns`.
    pub fn stream_key(&self, ns: &str) -> String {
        format!("{{{}-csr}}{ns}", self.prefix)
    }

    fn session_key(&self, pid: &str) -> String {
        format!("{}-csr-session:{pid}", self.prefix)
    }

    /// One command under fred's own timeout (see the module doc for why not an outer one).
    async fn run(
        &self,
        c: &Client,
        command: CustomCommand,
        args: Vec<RValue>,
    ) -> Result<RValue, StoreError> {
        let options = Options {
            timeout: Some(self.timeout),
            ..Options::default()
        };
        c.with_options(&options)
            .custom::<RValue, RValue>(command, args)
            .await
            .map_err(|e| match e.kind() {
                fred::error::ErrorKind::Timeout => StoreError::Timeout(self.timeout),
                _ => e.into(),
            })
    }

    /// One command on the commands client, routed by `key`.
    async fn command(
        &self,
        name: &'static str,
        key: &str,
        args: Vec<RValue>,
    ) -> Result<RValue, StoreError> {
        self.run(&self.client, cmd(name, key, false), args).await
    }

    /// `XTRIM key MINID [~|=] id`: drop the entries before `id`.
    async fn trim_below(&self, key: &str, id: Offset, exact: bool) -> Result<(), StoreError> {
        let how = if exact { "=" } else { "~" };
        let args = vec![
            key.into(),
            "MINID".into(),
            how.into(),
            id.to_string().into(),
        ];
        self.command("XTRIM", key, args).await.map(drop)
    }

    /// Append entries in order: (stream key, entry bytes, writer tag `uid:n`). One result per
    /// entry. The commands are sent together, in order (fred pipelines them on the connection
    /// without a pipeline's all-or-nothing timeout).
    pub async fn append(
        &self,
        items: &[(String, Vec<u8>, String)],
    ) -> Vec<Result<Offset, StoreError>> {
        let sends = items.iter().map(|(key, bytes, writer)| {
            let args: Vec<RValue> = vec![
                key.as_str().into(),
                "*".into(),
                "e".into(),
                RValue::Bytes(bytes.clone().into()),
                "w".into(),
                writer.as_str().into(),
            ];
            self.command("XADD", key, args)
        });
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.and_then(|v| as_offset(&v)))
            .collect()
    }

    /// The key recording how far stream `key` was trimmed (the largest id removed, or beyond).
    fn trim_key(&self, stream_key: &str) -> String {
        match stream_key.split_once('}') {
            Some((tag, ns)) => format!("{tag}}}trim:{ns}"),
            None => format!("{stream_key}:trim"),
        }
    }

    /// Trim stream `key`: entries before `older_than` (approximately: whole internal nodes),
    /// then the oldest beyond `max_len` (exactly); record the largest id that may be gone, so a
    /// recovery knows what it can no longer replay.
    pub async fn trim(
        &self,
        key: &str,
        older_than: Offset,
        max_len: u64,
    ) -> Result<(), StoreError> {
        self.trim_below(key, older_than, false).await?;
        let mut cut = Offset {
            ms: older_than.ms,
            seq: 0,
        };
        let len = self.command("XLEN", key, vec![key.into()]).await?;
        let len = len.as_u64().unwrap_or(0);
        if len > max_len {
            let over = len - max_len;
            let args = vec![
                key.into(),
                "-".into(),
                "+".into(),
                "COUNT".into(),
                (over as i64).into(),
            ];
            let oldest = as_entries(self.command("XRANGE", key, args).await?)?;
            if let Some(last) = oldest.last() {
                let below = Offset {
                    ms: last.id.ms,
                    seq: last.id.seq.saturating_add(1),
                };
                self.trim_below(key, below, true).await?;
                cut = cut.max(last.id);
            }
        }
        let tk = self.trim_key(key);
        let args = vec![
            RAISE.into(),
            1.into(),
            tk.as_str().into(),
            cut.to_string().into(),
        ];
        self.command("EVAL", &tk, args).await?;
        Ok(())
    }

    /// The id of the last entry of `key` (`None`: empty stream).
    pub async fn last_id(&self, key: &str) -> Result<Option<Offset>, StoreError> {
        let args = vec![key.into(), "+".into(), "-".into(), "COUNT".into(), 1.into()];
        let v = self.command("XREVRANGE", key, args).await?;
        Ok(as_entries(v)?.first().map(|e| e.id))
    }

    /// How far stream `key` was trimmed, and the last id it ever generated (Redis's clock).
    pub async fn marks(&self, key: &str) -> Result<StreamMarks, StoreError> {
        let tk = self.trim_key(key);
        let trimmed = match self.command("GET", &tk, vec![tk.as_str().into()]).await? {
            RValue::Null => Offset::ZERO,
            v => as_offset(&v)?,
        };
        let last = match self
            .command("XINFO", key, vec!["STREAM".into(), key.into()])
            .await
        {
            Ok(v) => {
                let fields = flatten(v, "XINFO")?;
                let mut last = Offset::ZERO;
                let mut it = fields.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if k.as_str().as_deref() == Some("last-generated-id") {
                        last = as_offset(&v)?;
                    }
                }
                last
            }
            Err(StoreError::Redis(e)) if e.contains("no such key") => Offset::ZERO,
            Err(e) => return Err(e),
        };
        Ok(StreamMarks { trimmed, last })
    }

    /// Up to `count` entries of `key` after `after`, in order.
    pub async fn range_after(
        &self,
        key: &str,
        after: Offset,
        count: u64,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let args = vec![
            key.into(),
            format!("({after}").into(),
            "+".into(),
            "COUNT".into(),
            (count as i64).into(),
        ];
        as_entries(self.command("XRANGE", key, args).await?)
    }

    /// Block up to `block` for entries after each stream's offset (`None`: only new ones, `$`).
    /// Returns (key, entries) per stream that had any.
    pub async fn read(
        &self,
        streams: &[(String, Option<Offset>)],
        block: Duration,
        count: u64,
    ) -> Result<Vec<(String, Vec<StreamEntry>)>, StoreError> {
        let Some((first, _)) = streams.first() else {
            return Ok(Vec::new());
        };
        let mut args: Vec<RValue> = vec![
            "COUNT".into(),
            (count as i64).into(),
            "BLOCK".into(),
            millis(block).into(),
            "STREAMS".into(),
        ];
        args.extend(streams.iter().map(|(k, _)| RValue::from(k.as_str())));
        args.extend(streams.iter().map(|(_, id)| match id {
            Some(id) => RValue::from(id.to_string()),
            None => RValue::from("$"),
        }));
        let wait = block + self.timeout;
        let fut = self
            .reader
            .custom::<RValue, RValue>(cmd("XREAD", first, true), args);
        let v = match tokio::time::timeout(wait, fut).await {
            Ok(r) => r?,
            Err(_) => return Err(StoreError::Timeout(wait)),
        };
        let pairs: Vec<(RValue, RValue)> = match v {
            RValue::Null => return Ok(Vec::new()),
            RValue::Map(m) => m
                .inner()
                .into_iter()
                .map(|(k, v)| (RValue::from(k), v))
                .collect(),
            RValue::Array(items) => items
                .into_iter()
                .filter_map(|i| match i {
                    RValue::Array(mut kv) if kv.len() == 2 => {
                        let v = kv.pop()?;
                        let k = kv.pop()?;
                        Some((k, v))
                    }
                    _ => None,
                })
                .collect(),
            other => return Err(StoreError::Shape(format!("XREAD {other:?}"))),
        };
        pairs
            .into_iter()
            .map(|(k, v)| {
                let key = k
                    .as_string()
                    .ok_or_else(|| StoreError::Shape("stream key".into()))?;
                Ok((key, as_entries(v)?))
            })
            .collect()
    }

    /// Take session `pid` over for socket `owner` (its TTL becomes `ttl`); `None` when it does
    /// not exist (never did, expired, deleted, or Redis lost it).
    pub async fn claim(
        &self,
        pid: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.session_key(pid);
        let args = vec![
            CLAIM.into(),
            1.into(),
            key.as_str().into(),
            owner.into(),
            millis(ttl).into(),
        ];
        let v = self.command("EVAL", &key, args).await?;
        let fields = match v {
            RValue::Null => return Ok(None),
            v => flatten(v, "session")?,
        };
        let mut rooms = None;
        let mut at = None;
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match k.as_str().as_deref() {
                Some("rooms") => {
                    let text = v.as_string().unwrap_or_default();
                    rooms = Some(
                        serde_json::from_str::<Vec<String>>(&text)
                            .map_err(|e| StoreError::Shape(format!("session rooms: {e}")))?,
                    );
                }
                Some("at") => at = Some(as_offset(&v)?),
                _ => {}
            }
        }
        match (rooms, at) {
            (Some(rooms), Some(at)) => Ok(Some(SessionRecord { rooms, at })),
            _ => Err(StoreError::Shape("session without rooms or at".into())),
        }
    }

    /// Apply session writes in order (sent together); a failed one is reported, the others run.
    pub async fn write_sessions(&self, writes: &[SessionWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut sends = Vec::with_capacity(writes.len());
        for w in writes {
            let (key, args) = match w {
                SessionWrite::Put {
                    pid,
                    owner,
                    rooms,
                    at,
                    ttl,
                } => {
                    let key = self.session_key(pid);
                    let rooms = serde_json::to_string(rooms)
                        .map_err(|e| StoreError::Shape(e.to_string()))?;
                    let args: Vec<RValue> = vec![
                        PUT.into(),
                        1.into(),
                        key.as_str().into(),
                        owner.as_str().into(),
                        rooms.into(),
                        at.to_string().into(),
                        millis(*ttl).into(),
                    ];
                    (key, args)
                }
                SessionWrite::Delete { pid, owner } => {
                    let key = self.session_key(pid);
                    let args: Vec<RValue> = vec![
                        DELETE.into(),
                        1.into(),
                        key.as_str().into(),
                        owner.as_str().into(),
                    ];
                    (key, args)
                }
            };
            sends.push(async move { self.command("EVAL", &key, args).await });
        }
        all_ok(sends).await
    }

    /// Push the expiry of live sessions `pids` to `ttl` from now.
    pub async fn keep_alive(&self, pids: &[String], ttl: Duration) -> Result<(), StoreError> {
        if pids.is_empty() {
            return Ok(());
        }
        let sends = pids.iter().map(|pid| async move {
            let key = self.session_key(pid);
            let args: Vec<RValue> = vec![key.as_str().into(), millis(ttl).into()];
            self.command("PEXPIRE", &key, args).await
        });
        all_ok(sends).await
    }
}
