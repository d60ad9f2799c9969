//! [`RecoveryAdapter`]: a socketioxide adapter around another one (the Redis adapter) that adds
//! connection state recovery to its namespace, through the session hooks of the vendored
//! socketioxide (`session_restore`, `session_attach`, `session_detach`,
//! `session_rooms_changed`, `session_emit`; see vendor/socketioxide-core/PATCHED.md).
//!
//! Tracked broadcasts do not go to the inner adapter: they are appended to the namespace's
//! stream and delivered by every node's stream reader ([`super`]). Everything else —
//! broadcasts with acks, volatile and local-only ones, remote socket operations, fetching
//! sockets — is the inner adapter's, unchanged. With recovery off the wrapper only delegates.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use socketioxide::adapter::Emitter;
use socketioxide::socket::Sid;
use socketioxide_core::adapter::errors::{BroadcastError, SocketError};
use socketioxide_core::adapter::{
    BroadcastFlags, BroadcastOptions, CoreAdapter, CoreLocalAdapter, DefinedAdapter,
    RemoteSocketData, Room, RoomParam, SessionStart,
};
use socketioxide_core::packet::{Packet, PacketData};
use socketioxide_core::{Str, Value};

use super::entry::Entry;
use super::offset::{Offset, new_pid, with_offset};
use super::store::{SessionWrite, StreamEntry};
use super::{NamespaceLink, Recovery, WriteOp};

/// The longest a replay waits for a socket's full queue to drain before giving up.
const REPLAY_STALL: Duration = Duration::from_secs(10);

/// The room every socket still catching up is in: every tracked delivery excludes it. The
/// leading NUL keeps it apart from any room an application can name from a client.
pub const HOLD_ROOM: &str = "\u{0}iogate:recovering";

/// The adapter's state: the inner adapter's, and the node's recovery runtime (`None`: off).
pub struct RecoveryState<S> {
    /// The inner adapter's state.
    pub inner: S,
    /// Recovery, when enabled.
    pub recovery: Option<Arc<Recovery>>,
}

#[derive(Debug, Clone)]
struct Session {
    pid: String,
    at: Offset,
}

#[derive(Debug, Default)]
struct Sessions {
    by_sid: HashMap<Sid, Session>,
    by_pid: HashMap<String, Sid>,
}

/// Delivery state, guarded by the lock the reader holds while delivering.
#[derive(Debug, Default)]
struct Delivery {
    /// The last offset delivered to local sockets (`None`: not known yet).
    cursor: Option<Offset>,
    /// Sockets held out of live delivery: until attach (`None`), or until the reader passes
    /// their client's offset (`Some`).
    holds: HashMap<Sid, Option<Offset>>,
    /// Per writer (`uid`), the last of its appends delivered here, in its order.
    writers: HashMap<String, u64>,
}

impl Delivery {
    /// Whether the `n`th append of writer `uid` comes after everything of it delivered here;
    /// records it when it does.
    fn in_order(&mut self, uid: &str, n: u64) -> bool {
        match self.writers.get_mut(uid) {
            Some(last) if *last >= n => false,
            Some(last) => {
                *last = n;
                true
            }
            None => {
                self.writers.insert(uid.to_string(), n);
                true
            }
        }
    }
}

/// What `session_restore` hands to `session_attach` for a recovered session.
struct Restore {
    pid: String,
    from: Offset,
    rooms: Vec<String>,
}

/// A socketioxide adapter that adds connection state recovery to `A`.
pub struct RecoveryAdapter<A> {
    inner: Arc<A>,
    recovery: Option<Arc<Recovery>>,
    key: String,
    path: Str,
    sessions: Mutex<Sessions>,
    delivery: Mutex<Delivery>,
    me: OnceLock<Weak<Self>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the maps whole: a poisoned lock still holds valid state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An event the server sends without expecting an ack, with its data.
fn tracked_data(packet: &Packet) -> Option<&Value> {
    match &packet.inner {
        PacketData::Event(v, None) | PacketData::BinaryEvent(v, None) => Some(v),
        _ => None,
    }
}

impl<A: CoreAdapter<Emitter>> RecoveryAdapter<A> {
    fn recovery(&self) -> Option<&Arc<Recovery>> {
        self.recovery.as_ref()
    }

    fn pid_of(&self, sid: Sid) -> Option<Session> {
        lock(&self.sessions).by_sid.get(&sid).cloned()
    }

    /// The rooms to keep for a session (not the hold room).
    fn rooms_of(&self, sid: Sid) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .get_local()
            .socket_rooms(sid)
            .into_iter()
            .filter(|r| r != HOLD_ROOM)
            .map(|r| r.to_string())
            .collect();
        rooms.sort();
        rooms
    }

    fn hold(&self, sid: Sid, until: Option<Offset>) {
        lock(&self.delivery).holds.insert(sid, until);
        self.get_local().add_all(sid, [HOLD_ROOM]);
    }

    fn release(&self, d: &mut Delivery, sid: Sid) {
        if d.holds.remove(&sid).is_some() {
            self.get_local().del(sid, [HOLD_ROOM]);
        }
    }

    /// Deliver one entry to the local sockets it is for (the delivery lock is held).
    fn deliver_one(&self, d: &mut Delivery, id: Offset, entry: Entry) {
        // Sockets whose client is past this offset no longer wait.
        let released: Vec<Sid> = d
            .holds
            .iter()
            .filter(|(_, until)| until.is_some_and(|u| u < id))
            .map(|(s, _)| *s)
            .collect();
        for sid in released {
            self.release(d, sid);
        }
        let Some(data) = with_offset(&entry.data, id) else {
            return;
        };
        let packet = Packet::event(self.path.clone(), data);
        let sessions = lock(&self.sessions);
        let result = match &entry.target {
            Some(pid) => match sessions.by_pid.get(pid) {
                Some(sid) if !d.holds.contains_key(sid) => {
                    let sid = *sid;
                    drop(sessions);
                    self.get_local()
                        .broadcast(packet, BroadcastOptions::new(sid))
                }
                _ => Ok(()),
            },
            None => {
                let sender = entry
                    .sender
                    .as_ref()
                    .and_then(|p| sessions.by_pid.get(p).copied());
                drop(sessions);
                let hold = Room::from(HOLD_ROOM);
                let opts = entry.local_options(sender, (!d.holds.is_empty()).then_some(&hold));
                self.get_local().broadcast(packet, opts)
            }
        };
        if let (Some(rec), Err(errors)) = (self.recovery(), result) {
            rec.metrics
                .recovery_delivery_errors
                .inc_by(errors.len() as u64);
        }
        if let Some(rec) = self.recovery() {
            rec.metrics.recovery_delivered.inc();
        }
    }

    /// Deliver, without an offset, the `n`th append of this node's writer that Redis did not
    /// get, so a late copy of an earlier append is not delivered after it.
    fn deliver_untracked(&self, n: u64, packet: Packet, opts: BroadcastOptions) {
        let Some(rec) = self.recovery() else { return };
        let mut d = lock(&self.delivery);
        d.in_order(&rec.writer_uid, n);
        let _ = self.get_local().broadcast(packet, opts);
    }

    /// Local sockets whose rooms a remote join or leave changed.
    fn rooms_changed(&self, sids: Vec<Sid>) {
        for sid in sids {
            self.session_rooms_changed(sid);
        }
    }

    /// Queue a session write.
    fn write(&self, w: SessionWrite) {
        if let Some(rec) = self.recovery() {
            rec.enqueue(WriteOp::Session(w));
        }
    }

    fn put(&self, sid: Sid, s: &Session, ttl: Duration) -> SessionWrite {
        SessionWrite::Put {
            pid: s.pid.clone(),
            owner: sid.to_string(),
            rooms: self.rooms_of(sid),
            at: s.at,
            ttl,
        }
    }

    /// Recover session `pid` for socket `sid`, from offset `offset` (`None`: the session's start).
    async fn try_restore(
        &self,
        rec: &Recovery,
        sid: Sid,
        pid: &str,
        offset: Option<Offset>,
    ) -> Result<Restore, &'static str> {
        let record = match rec
            .store
            .claim(pid, sid.as_str(), rec.windows.live_ttl)
            .await
        {
            Ok(Some(r)) => r,
            Ok(None) => return Err("unknown_session"),
            Err(e) => {
                tracing::debug!(error = %e, "session lookup failed");
                return Err("unavailable");
            }
        };
        let from = offset.unwrap_or(record.at);
        let marks = match rec.store.marks(&self.key).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "stream lookup failed");
                return Err("unavailable");
            }
        };
        // Entries after `from` may have been trimmed. That is harmless for entries older than
        // the retention window: they went out at least one heartbeat before this session's
        // client went away (its session is younger than `max_disconnection`), so it had them.
        // A cut into younger entries (`max_entries`) may have removed what it missed.
        if from < marks.trimmed {
            let age_ms = marks.last.ms.saturating_sub(marks.trimmed.ms);
            if u128::from(age_ms) < rec.windows.retention.as_millis() {
                return Err("offset_not_held");
            }
        }
        Ok(Restore {
            pid: pid.to_string(),
            from,
            rooms: record.rooms,
        })
    }

    /// Queue one packet to `sid`, waiting while its queue (`engineio.max_buffer_size` packets)
    /// is full: a replay can be far longer than the queue.
    async fn send_paced(&self, sid: Sid, packet: Packet) -> Result<(), ()> {
        let deadline = tokio::time::Instant::now() + REPLAY_STALL;
        loop {
            match self
                .get_local()
                .broadcast(packet.clone(), BroadcastOptions::new(sid))
            {
                Ok(()) => return Ok(()),
                Err(errors)
                    if errors
                        .iter()
                        .all(|e| matches!(e, SocketError::InternalChannelFull))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => return Err(()),
            }
        }
    }

    /// Replay what `sid` missed after `from` up to this node's cursor, give it its rooms back,
    /// and let live delivery reach it.
    ///
    /// The socket is held out of live delivery meanwhile. Replay runs outside the reader's lock
    /// (it waits for the socket's queue), so the reader may move on; the loop replays that too,
    /// until — under the lock — nothing is left between what was replayed and the cursor. Then
    /// the rooms are restored and the socket released, atomically with respect to the reader.
    async fn attach_recovered(&self, rec: &Recovery, sid: Sid, r: Restore) -> Result<Offset, ()> {
        let rooms: HashSet<String> = r.rooms.iter().cloned().collect();
        // Every entry after `from` up to `done` that was meant for the session has been sent.
        let mut done = r.from;
        let mut replayed = 0u64;
        loop {
            {
                let mut d = lock(&self.delivery);
                let cursor = d.cursor.unwrap_or(Offset::ZERO);
                if cursor <= done {
                    self.get_local().add_all(sid, r.rooms.clone());
                    if done > cursor {
                        // The client is ahead of this node: held until the reader passes it.
                        d.holds.insert(sid, Some(done));
                    } else {
                        self.release(&mut d, sid);
                    }
                    rec.metrics.recovery_replayed.inc_by(replayed);
                    return Ok(done.max(cursor));
                }
            }
            // Fetch what is in the stream after `done` now: it reaches the cursor read above.
            let cursor = lock(&self.delivery).cursor.unwrap_or(Offset::ZERO);
            let mut after = done;
            let mut page_full = true;
            while page_full && after < cursor {
                let page = rec
                    .store
                    .range_after(&self.key, after, super::PAGE)
                    .await
                    .map_err(|e| tracing::debug!(error = %e, "replay fetch failed"))?;
                page_full = page.len() as u64 == super::PAGE;
                if page.is_empty() {
                    // Nothing after `after` any more: trimmed meanwhile, or never there.
                    break;
                }
                for StreamEntry { id, bytes, .. } in page {
                    after = id;
                    if id > cursor {
                        break;
                    }
                    let Ok(entry) = Entry::decode(&bytes) else {
                        continue;
                    };
                    if !entry.reaches(&r.pid, &rooms) {
                        continue;
                    }
                    let Some(data) = with_offset(&entry.data, id) else {
                        continue;
                    };
                    self.send_paced(sid, Packet::event(self.path.clone(), data))
                        .await?;
                    replayed += 1;
                }
            }
            done = done.max(cursor);
        }
    }
}

impl<A: CoreAdapter<Emitter>> NamespaceLink for RecoveryAdapter<A> {
    fn key(&self) -> &str {
        &self.key
    }

    fn cursor(&self) -> Option<Offset> {
        lock(&self.delivery).cursor
    }

    fn deliver(&self, entries: Vec<StreamEntry>) {
        let mut d = lock(&self.delivery);
        for e in entries {
            if d.cursor.is_some_and(|c| e.id <= c) {
                continue;
            }
            d.cursor = Some(e.id);
            if let Some((uid, n)) = &e.writer
                && !d.in_order(uid, *n)
            {
                // Applied by Redis after a later append of the same writer (sent as Redis
                // failed): delivering it now would be out of order.
                if let Some(rec) = self.recovery() {
                    rec.metrics.recovery_late.inc();
                }
                continue;
            }
            match Entry::decode(&e.bytes) {
                Ok(entry) => self.deliver_one(&mut d, e.id, entry),
                Err(err) => {
                    tracing::warn!(offset = %e.id, error = %err, "skipping an undecodable stream entry");
                }
            }
        }
    }

    fn live_pids(&self) -> Vec<String> {
        lock(&self.sessions).by_pid.keys().cloned().collect()
    }
}

impl<A: CoreAdapter<Emitter>> DefinedAdapter for RecoveryAdapter<A> {}

impl<A: CoreAdapter<Emitter>> CoreAdapter<Emitter> for RecoveryAdapter<A> {
    type Error = A::Error;
    type State = RecoveryState<A::State>;
    type AckStream = A::AckStream;
    type InitRes = A::InitRes;

    fn new(state: &Self::State, local: CoreLocalAdapter<Emitter>) -> Self {
        let path = local.path().clone();
        let key = state
            .recovery
            .as_ref()
            .map(|r| r.store.stream_key(&path))
            .unwrap_or_default();
        RecoveryAdapter {
            inner: Arc::new(A::new(&state.inner, local)),
            recovery: state.recovery.clone(),
            key,
            path,
            sessions: Mutex::new(Sessions::default()),
            delivery: Mutex::new(Delivery::default()),
            me: OnceLock::new(),
        }
    }

    fn init(self: Arc<Self>, on_success: impl FnOnce() + Send + 'static) -> Self::InitRes {
        let _ = self.me.set(Arc::downgrade(&self));
        if let Some(rec) = self.recovery.clone() {
            let link: Arc<dyn NamespaceLink> = self.clone();
            rec.register(Arc::downgrade(&link));
            // Start reading at the stream's end: no local socket is waiting for older entries.
            let me = Arc::downgrade(&self);
            tokio::spawn(async move {
                let Some(this) = me.upgrade() else { return };
                match rec.store.last_id(&this.key).await {
                    Ok(last) => {
                        let mut d = lock(&this.delivery);
                        if d.cursor.is_none() {
                            d.cursor = Some(last.unwrap_or(Offset::ZERO));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "stream end unknown; reading new entries")
                    }
                }
            });
        }
        self.inner.clone().init(on_success)
    }

    fn close(&self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }

    fn server_count(&self) -> impl Future<Output = Result<u16, Self::Error>> + Send {
        self.inner.server_count()
    }

    async fn broadcast(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
    ) -> Result<(), BroadcastError> {
        let trackable = tracked_data(&packet).is_some()
            && !opts.has_flag(BroadcastFlags::Volatile)
            && !opts.has_flag(BroadcastFlags::Local);
        let Some(rec) = self.recovery().filter(|_| trackable) else {
            return self.inner.broadcast(packet, opts).await;
        };
        let single_local = !opts.has_flag(BroadcastFlags::Broadcast) && opts.rooms.is_empty();
        let entry = match (single_local, opts.sid.and_then(|s| self.pid_of(s))) {
            // One local socket: the session's own emit.
            (true, Some(s)) => Entry::to_session(
                s.pid,
                tracked_data(&packet)
                    .cloned()
                    .unwrap_or(Value::Bytes(Default::default())),
            ),
            // One socket that is not a local session (a remote socket): not tracked.
            (true, None) => return self.inner.broadcast(packet, opts).await,
            (false, sender) => Entry::broadcast(
                &opts,
                sender.map(|s| s.pid),
                tracked_data(&packet)
                    .cloned()
                    .unwrap_or(Value::Bytes(Default::default())),
            ),
        };
        let bytes = match entry.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "tracked packet not encodable; sent untracked");
                return self.inner.broadcast(packet, opts).await;
            }
        };
        // If Redis is unreachable the writer delivers it here, in order, without an offset.
        let me = self.me.get().cloned();
        let fallback: super::Fallback = Box::new(move |n| {
            if let Some(this) = me.and_then(|w| w.upgrade()) {
                this.deliver_untracked(n, packet, opts);
            }
        });
        // Delivered by every node's reader (this one's too) with its offset, by the fallback, or
        // — sent without an answer — by the readers if it landed: never twice.
        let _ = rec.append(self.key.clone(), bytes, fallback).await;
        Ok(())
    }

    fn broadcast_with_ack(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Self::AckStream, Self::Error>> + Send {
        self.inner.broadcast_with_ack(packet, opts, timeout)
    }

    async fn add_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), Self::Error> {
        let local = self.get_local().sockets(opts.clone());
        let r = self.inner.add_sockets(opts, rooms).await;
        self.rooms_changed(local);
        r
    }

    async fn del_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), Self::Error> {
        let local = self.get_local().sockets(opts.clone());
        let r = self.inner.del_sockets(opts, rooms).await;
        self.rooms_changed(local);
        r
    }

    fn disconnect_socket(
        &self,
        opts: BroadcastOptions,
    ) -> impl Future<Output = Result<(), BroadcastError>> + Send {
        self.inner.disconnect_socket(opts)
    }

    async fn rooms(&self, opts: BroadcastOptions) -> Result<Vec<Room>, Self::Error> {
        let mut rooms = self.inner.rooms(opts).await?;
        rooms.retain(|r| r != HOLD_ROOM);
        Ok(rooms)
    }

    fn fetch_sockets(
        &self,
        opts: BroadcastOptions,
    ) -> impl Future<Output = Result<Vec<RemoteSocketData>, Self::Error>> + Send {
        self.inner.fetch_sockets(opts)
    }

    fn get_local(&self) -> &CoreLocalAdapter<Emitter> {
        self.inner.get_local()
    }

    async fn session_restore(&self, sid: Sid, auth: Option<&Value>) -> SessionStart {
        let Some(rec) = self.recovery() else {
            return SessionStart::default();
        };
        let Some((pid, offset)) = auth.and_then(parse_auth) else {
            return SessionStart::default();
        };
        let offset = match offset.map(|o| o.parse::<Offset>()) {
            Some(Ok(o)) => Some(o),
            Some(Err(_)) => {
                rec.metrics
                    .recovery_attempts
                    .with_label_values(&["offset_not_held"])
                    .inc();
                return SessionStart::default();
            }
            None => None,
        };
        match self.try_restore(rec, sid, &pid, offset).await {
            Ok(restore) => {
                // Out of every live delivery until attach has set its replay boundary.
                self.hold(sid, None);
                SessionStart {
                    recovered: true,
                    state: Some(Box::new(restore)),
                }
            }
            Err(reason) => {
                tracing::debug!(%sid, pid, reason, "session not recovered");
                rec.metrics
                    .recovery_attempts
                    .with_label_values(&[reason])
                    .inc();
                SessionStart::default()
            }
        }
    }

    async fn session_attach(&self, sid: Sid, start: SessionStart) -> Option<Str> {
        let rec = self.recovery()?.clone();
        let restore = start
            .state
            .and_then(|s| s.downcast::<Restore>().ok())
            .filter(|_| start.recovered);
        let (pid, at) = match restore {
            Some(r) => {
                let pid = r.pid.clone();
                match self.attach_recovered(&rec, sid, *r).await {
                    Ok(at) => {
                        rec.metrics
                            .recovery_attempts
                            .with_label_values(&["recovered"])
                            .inc();
                        (pid, at)
                    }
                    Err(()) => {
                        // The replay could not be fetched: a fresh session after all.
                        let mut d = lock(&self.delivery);
                        self.release(&mut d, sid);
                        rec.metrics
                            .recovery_attempts
                            .with_label_values(&["unavailable"])
                            .inc();
                        (new_pid(), d.cursor.unwrap_or(Offset::ZERO))
                    }
                }
            }
            None => (
                new_pid(),
                lock(&self.delivery).cursor.unwrap_or(Offset::ZERO),
            ),
        };
        let session = Session {
            pid: pid.clone(),
            at,
        };
        {
            let mut s = lock(&self.sessions);
            s.by_pid.insert(pid.clone(), sid);
            s.by_sid.insert(sid, session.clone());
        }
        tracing::debug!(%sid, pid = %session.pid, at = %session.at, "session attached");
        let put = self.put(sid, &session, rec.windows.live_ttl);
        self.write(put);
        Some(Str::from(pid))
    }

    fn session_detach(&self, sid: Sid, recoverable: bool) {
        let Some(rec) = self.recovery() else { return };
        {
            let mut d = lock(&self.delivery);
            self.release(&mut d, sid);
        }
        let session = {
            let mut s = lock(&self.sessions);
            let session = s.by_sid.remove(&sid);
            if let Some(session) = &session {
                s.by_pid.remove(&session.pid);
            }
            session
        };
        let Some(session) = session else { return };
        tracing::debug!(%sid, pid = %session.pid, recoverable, "session detached");
        let write = if recoverable {
            self.put(sid, &session, rec.windows.max_disconnection)
        } else {
            SessionWrite::Delete {
                pid: session.pid,
                owner: sid.to_string(),
            }
        };
        self.write(write);
    }

    fn session_rooms_changed(&self, sid: Sid) {
        let Some(rec) = self.recovery() else { return };
        if let Some(session) = self.pid_of(sid) {
            let put = self.put(sid, &session, rec.windows.live_ttl);
            self.write(put);
        }
    }

    fn session_emit(&self, sid: Sid, packet: Packet) -> Result<(), Packet> {
        let Some(rec) = self.recovery() else {
            return Err(packet);
        };
        let (Some(session), Some(data)) = (self.pid_of(sid), tracked_data(&packet)) else {
            return Err(packet);
        };
        let entry = Entry::to_session(session.pid, data.clone());
        let Ok(bytes) = entry.encode() else {
            return Err(packet);
        };
        // If Redis cannot take it, deliver it here without an offset.
        let me = self.me.get().cloned();
        let fallback: super::Fallback = Box::new(move |n| {
            if let Some(this) = me.and_then(|w| w.upgrade()) {
                this.deliver_untracked(n, packet, BroadcastOptions::new(sid));
            }
        });
        let queued = rec.enqueue(WriteOp::Append {
            key: self.key.clone(),
            entry: bytes,
            reply: None,
            fallback,
        });
        if queued {
            Ok(())
        } else {
            Err(Packet::event(self.path.clone(), entry.data))
        }
    }
}

/// `pid` and `offset` from a CONNECT payload (`offset` may be missing: a client that never got
/// a tracked event).
fn parse_auth(auth: &Value) -> Option<(String, Option<String>)> {
    let Value::Str(text, _) = auth else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(text.as_str()).ok()?;
    let pid = v.get("pid")?.as_str()?.to_string();
    if pid.is_empty() || pid.len() > 64 {
        return None;
    }
    let offset = v.get("offset").and_then(|o| o.as_str()).map(str::to_string);
    Some((pid, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_payloads() {
        let v = |s: &str| Value::Str(Str::from(s.to_string()), None);
        assert_eq!(
            parse_auth(&v(r#"{"pid":"abc","offset":"1-2","room":"x"}"#)),
            Some(("abc".into(), Some("1-2".into())))
        );
        assert_eq!(
            parse_auth(&v(r#"{"pid":"abc"}"#)),
            Some(("abc".into(), None))
        );
        assert_eq!(parse_auth(&v(r#"{"room":"x"}"#)), None);
        assert_eq!(parse_auth(&v(r#"{"pid":5}"#)), None);
        assert_eq!(parse_auth(&v("[]")), None);
        assert_eq!(parse_auth(&v("not json")), None);
    }

    #[test]
    fn a_writers_late_append_is_not_delivered() {
        let mut d = Delivery::default();
        assert!(d.in_order("a", 1));
        assert!(d.in_order("a", 3)); // 2 was not applied (yet): a gap is fine
        assert!(!d.in_order("a", 2)); // …but 2 applied after 3 is late
        assert!(!d.in_order("a", 3)); // and nothing is delivered twice
        assert!(d.in_order("b", 1)); // writers are independent
        assert!(d.in_order("a", 4));
    }
}
