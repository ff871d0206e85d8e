//! Command semantics: executes parsed [`Request`]s against the [`Store`](crate::store::Store) and writes the replies.
//!
//! This is where memcached's meaning of each command lives: expiry conversion, CAS checks, the add/replace/
//! append rules, incr/decr arithmetic, and the lease protocol (meta `N`/`W`/`Z`/`X`, `md I`, mcrouter's
//! `lease-get`/`lease-set`). It does no I/O: the connection hands it requests and a reply buffer.
//!
//! Lease model (memcached 1.6's meta semantics): a lease is a placeholder item with an empty value, the
//! `win_sent` bit and the placeholder mark; its CAS value is the lease token. Whoever sets with `C<token>`
//! (or `lease-set` with the token) while the placeholder is there stores; any delete removes the
//! placeholder and `md I` gives the item a new CAS, so a late set with the old token is refused
//! (`NF`/`EX`/`NOT_STORED`). The placeholder's TTL is the lease window: when it expires the lease ends and
//! the next miss gets a new one.
//!
//! For text-protocol commands a placeholder or a stale item counts as absent (a text client cannot see W/X/Z,
//! and must never be served a value that was invalidated), except for `add`, which must not store over
//! either: the value it carries may have been read before the invalidation.

use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};

use crate::protocol::{
    compose_lease_value, compose_meta, compose_meta_subset, compose_number, compose_stat,
    compose_value, decode_key, format_u64, parse_u64, reply, ArithOp, Keys, LongGetLine, MetaCode,
    MetaCommand, MetaFlags, MetaItemInfo, MetaSetMode, Request, StoreMode, WinFlags, MAX_KEY_LEN,
    REALTIME_MAXDELTA,
};
use crate::server::{
    give_large_buffer, reserve_reply, take_large_buffer, Node, MAX_BATCH_REPLY_BYTES,
    MAX_KEPT_BUFFER_BYTES,
};
use crate::stats::Counters;
use crate::store::{Entry, ItemCursor, ItemMeta, NewItem, Store, StoreError, MAX_CLASS_ID};

/// The version this server reports (memcached-shaped, so clients that parse it are happy).
pub const VERSION: &str = concat!("1.6.0-cache-node-", env!("CARGO_PKG_VERSION"));

/// What the connection should do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading requests.
    Continue,
    /// Close the connection (after writing what is buffered).
    Close,
    /// The reply buffer is full and the request is not answered yet (a multi-get of large values):
    /// write out what is buffered, then execute the same request again, which carries on where it
    /// stopped. Keeps a connection's buffered reply near [`MAX_BATCH_REPLY_BYTES`] however many keys
    /// one request names.
    Unfinished,
}

/// An expiry time converted from the protocol's exptime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Never expires (exptime 0).
    Never,
    /// Expires at this clock second.
    At(u32),
    /// Already expired (negative, or an absolute time in the past).
    Expired,
}

impl Expiry {
    fn store_time(self) -> u32 {
        match self {
            Expiry::Never => 0,
            Expiry::At(t) => t,
            // Callers remove the item instead; 1 is in the past for any clock that has run a second.
            Expiry::Expired => 1,
        }
    }
}

/// Converts a protocol exptime at clock second `now` / unix second `unix_now`: 0 = never, negative = already
/// expired, up to 30 days = relative seconds, above = a Unix time.
pub fn convert_exptime(exptime: i64, now: u32, unix_now: u64) -> Expiry {
    if exptime == 0 {
        return Expiry::Never;
    }
    if exptime < 0 {
        return Expiry::Expired;
    }
    let relative = if exptime > REALTIME_MAXDELTA {
        exptime - unix_now as i64
    } else {
        exptime
    };
    if relative <= 0 {
        return Expiry::Expired;
    }
    Expiry::At((i64::from(now) + relative).min(i64::from(u32::MAX)) as u32)
}

/// An item that a text client may see: not a lease placeholder, not marked stale.
fn live(meta: &ItemMeta) -> bool {
    !meta.stale && !is_placeholder(meta)
}

/// A lease placeholder that still holds its lease: created empty by a miss with `N` (or `lease-get`)
/// and not marked stale since. An empty value a client stored is not one, even when a reader has won
/// it with `R`.
fn is_placeholder(meta: &ItemMeta) -> bool {
    meta.placeholder && !meta.stale
}

fn ttl_remaining(exptime: u32, now: u32) -> i64 {
    if exptime == 0 {
        -1
    } else {
        i64::from(exptime) - i64::from(now)
    }
}

/// Executes requests for one connection. Holds the connection's counters and scratch space so the hot
/// path allocates nothing.
pub struct Session<'n> {
    /// The node: store, clock, config, shared counters.
    node: &'n Node,
    /// This connection's counters, drained into the node's after each batch.
    pub counters: Counters,
    /// Reused buffer for read-modify-write values (append, prepend, incr).
    scratch: BytesMut,
    /// Keys of the current multi-get already answered when it returned [`Flow::Unfinished`]; 0 between
    /// requests.
    get_resume_at: usize,
    /// Where the current `lru_crawler metadump` resumes when it returned [`Flow::Unfinished`];
    /// None between requests.
    metadump_resume_at: Option<ItemCursor>,
}

enum StoreOutcome {
    Stored,
    NotStored,
    Exists,
    NotFound,
    TooLarge,
    OutOfMemory,
}

impl<'n> Session<'n> {
    /// A session for one connection.
    pub fn new(node: &'n Node) -> Self {
        Session {
            node,
            counters: Counters::default(),
            scratch: BytesMut::new(),
            get_resume_at: 0,
            metadump_resume_at: None,
        }
    }

    fn expiry(&self, exptime: i64) -> Expiry {
        let clock = &self.node.clock;
        convert_exptime(exptime, clock.now(), clock.unix_now())
    }

    /// Executes one request, appending its reply (if any) to `out`.
    pub fn execute(&mut self, request: Request<'_>, out: &mut BytesMut) -> Flow {
        match request {
            Request::Get {
                with_cas,
                touch,
                keys,
            } => return self.get(with_cas, touch, keys, true, out),
            Request::Store {
                mode,
                key,
                flags,
                exptime,
                cas_unique,
                data,
                noreply,
            } => {
                let r = self.store_text(mode, key, flags, exptime, cas_unique, data);
                if !noreply {
                    out.put_slice(r);
                }
            }
            Request::Delete { key, noreply } => {
                let removed = self
                    .node
                    .store
                    .with_entry(key, |e| e.item().is_some() && e.remove());
                if removed {
                    self.counters.delete_hits += 1;
                } else {
                    self.counters.delete_misses += 1;
                }
                if !noreply {
                    out.put_slice(if removed {
                        reply::DELETED
                    } else {
                        reply::NOT_FOUND
                    });
                }
            }
            Request::Arith {
                op,
                key,
                delta,
                noreply,
            } => self.arith_text(op, key, delta, noreply, out),
            Request::Touch {
                key,
                exptime,
                noreply,
            } => {
                self.counters.cmd_touch += 1;
                let exp = self.expiry(exptime);
                let found = self.node.store.with_entry(key, |e| touch_entry(e, exp));
                if found {
                    self.counters.touch_hits += 1;
                } else {
                    self.counters.touch_misses += 1;
                }
                if !noreply {
                    out.put_slice(if found {
                        reply::TOUCHED
                    } else {
                        reply::NOT_FOUND
                    });
                }
            }
            Request::FlushAll { delay, noreply } => {
                self.counters.cmd_flush += 1;
                let now = self.node.clock.now();
                let at = if delay <= 0 {
                    now
                } else {
                    match self.expiry(delay) {
                        // As memcached 1.6 (`oldest_live = realtime(exptime) - 1`): the flush takes
                        // effect one clock second before the delay is over, so `flush_all 1` flushes
                        // at once and `flush_all N` within N - 1 seconds.
                        Expiry::At(t) => t.saturating_sub(1).max(now),
                        _ => now,
                    }
                };
                self.node.store.flush_all(at);
                if at <= now {
                    // memcached marks a flush that takes effect now with a CAS number (oldest_cas); it
                    // flushes nothing here, but the next item's CAS is then the same on both.
                    self.node.store.next_cas();
                }
                if !noreply {
                    out.put_slice(reply::OK);
                }
            }
            Request::Stats { group, args } => self.stats(group, args, out),
            Request::Version => {
                out.put_slice(b"VERSION ");
                out.put_slice(VERSION.as_bytes());
                out.put_slice(b"\r\n");
            }
            Request::Verbosity { noreply } => {
                if !noreply {
                    out.put_slice(reply::OK);
                }
            }
            Request::LruCrawlerMetadump { classes } => return self.metadump(classes, out),
            Request::Quit => return Flow::Close,
            Request::MetaNoop => out.put_slice(reply::MN),
            Request::LeaseGet { key } => self.lease_get(key, out),
            Request::LeaseSet {
                key,
                token,
                flags,
                exptime,
                data,
                noreply,
            } => {
                let r = self.lease_set(key, token, flags, exptime, data);
                if !noreply {
                    out.put_slice(r);
                }
            }
            Request::Meta {
                command,
                key,
                flags,
                data,
            } => {
                let mut key_buf = [0u8; MAX_KEY_LEN];
                let Some(decoded) = decode_key(key, flags.base64_key, &mut key_buf) else {
                    self.counters.protocol_errors += 1;
                    out.put_slice(b"CLIENT_ERROR bad command line format\r\n");
                    return Flow::Continue;
                };
                match command {
                    MetaCommand::Get => self.meta_get(decoded, key, &flags, out),
                    MetaCommand::Set => self.meta_set(decoded, key, &flags, data, out),
                    MetaCommand::Delete => self.meta_delete(decoded, key, &flags, out),
                    MetaCommand::Arith => self.meta_arith(decoded, key, &flags, out),
                    MetaCommand::Debug => self.meta_debug(decoded, key, out),
                }
            }
        }
        Flow::Continue
    }

    /// A part of a get line too long to read whole ([`Parsed::GetLinePart`]): its keys, answered
    /// without the `END` that the line's last part, a [`Request::Get`], sends.
    ///
    /// [`Parsed::GetLinePart`]: crate::protocol::Parsed::GetLinePart
    pub fn execute_get_part(
        &mut self,
        line: LongGetLine,
        keys: Keys<'_>,
        out: &mut BytesMut,
    ) -> Flow {
        self.get(line.with_cas, line.touch, keys, false, out)
    }

    /// get, gets, gat, gats; `end`: close the reply with `END`. Stops with [`Flow::Unfinished`] once the reply passes
    /// [`MAX_BATCH_REPLY_BYTES`] with keys left: a 16 KiB line names up to 8,000 keys, which for 1 MB
    /// values would otherwise be an 8 GB reply built in memory (memcached sends from the items
    /// themselves and never copies them).
    fn get(
        &mut self,
        with_cas: bool,
        touch: Option<i64>,
        keys: Keys<'_>,
        end: bool,
        out: &mut BytesMut,
    ) -> Flow {
        let exp = touch.map(|t| self.expiry(t));
        let skip = std::mem::take(&mut self.get_resume_at);
        for (i, key) in keys.iter().enumerate().skip(skip) {
            if i > skip && out.len() >= MAX_BATCH_REPLY_BYTES {
                self.get_resume_at = i;
                return Flow::Unfinished;
            }
            let hit = self.node.store.with_entry(key, |e| {
                let Some(it) = e.item() else {
                    return false;
                };
                let meta = *it.meta();
                if !live(&meta) {
                    return false;
                }
                reserve_reply(out, key.len() + it.value().len() + 64);
                compose_value(
                    out,
                    key,
                    meta.flags,
                    &[it.value()],
                    with_cas.then_some(meta.cas),
                );
                e.record_read();
                if let Some(exp) = exp {
                    touch_entry(e, exp);
                }
                true
            });
            // As memcached 1.6 (process_get_command): a gat/gats key counts as a touch only, not
            // as a get, so cmd_get = get_hits + get_misses and cmd_touch = touch_hits + touch_misses.
            let c = &mut self.counters;
            match (exp.is_some(), hit) {
                (true, true) => c.touch_hits += 1,
                (true, false) => c.touch_misses += 1,
                (false, true) => c.get_hits += 1,
                (false, false) => c.get_misses += 1,
            }
            if exp.is_some() {
                c.cmd_touch += 1;
            } else {
                c.cmd_get += 1;
            }
        }
        if end {
            out.put_slice(reply::END);
        }
        Flow::Continue
    }

    #[allow(clippy::too_many_arguments)]
    fn store_text(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        flags: u32,
        exptime: i64,
        cas_unique: u64,
        data: &[u8],
    ) -> &'static [u8] {
        self.counters.cmd_set += 1;
        let exp = self.expiry(exptime);
        let max = self.node.config.limits.max_value_len;
        if matches!(mode, StoreMode::Append | StoreMode::Prepend) {
            self.take_scratch();
        }
        let scratch = &mut self.scratch;
        let store = &self.node.store;
        let outcome = store.with_entry(key, |e| {
            // add refuses over a lease placeholder or a stale item too (as memcached, which sees an item
            // there): the value it carries may have been read before the invalidation that made the item
            // stale or voided the lease, and a text client has no token to tell.
            let (occupied, current) = match e.item() {
                None => (false, None),
                Some(it) => {
                    let meta = *it.meta();
                    let current = live(&meta).then(|| {
                        if matches!(mode, StoreMode::Append | StoreMode::Prepend) {
                            scratch.clear();
                            scratch.extend_from_slice(it.value());
                        }
                        meta
                    });
                    (true, current)
                }
            };
            match (mode, current) {
                (StoreMode::Add, _) if occupied => return StoreOutcome::NotStored,
                (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                    return StoreOutcome::NotStored
                }
                (StoreMode::Cas, None) => return StoreOutcome::NotFound,
                (StoreMode::Cas, Some(m)) if m.cas != cas_unique => return StoreOutcome::Exists,
                _ => {}
            }
            let (parts, flags, exptime): ([&[u8]; 2], u32, u32) = match (mode, current) {
                (StoreMode::Append, Some(m)) => ([&scratch[..], data], m.flags, m.exptime),
                (StoreMode::Prepend, Some(m)) => ([data, &scratch[..]], m.flags, m.exptime),
                _ => {
                    if exp == Expiry::Expired {
                        // memcached links the item, which takes a CAS number, and it expires.
                        store.next_cas();
                        e.remove();
                        return StoreOutcome::Stored;
                    }
                    ([data, &[]], flags, exp.store_time())
                }
            };
            if parts[0].len() + parts[1].len() > max {
                // As memcached 1.6 (do_store_item): an append or prepend whose result cannot be
                // allocated is NOT_STORED, the old item kept.
                return match mode {
                    StoreMode::Append | StoreMode::Prepend => StoreOutcome::NotStored,
                    _ => StoreOutcome::TooLarge,
                };
            }
            insert(
                e,
                NewItem {
                    value: &parts,
                    flags,
                    exptime,
                    cas: 0,
                    stale: false,
                    win_sent: false,
                    placeholder: false,
                },
            )
        });
        self.release_scratch();
        if mode == StoreMode::Set {
            self.unlink_if_refused(key, &outcome);
        }
        if mode == StoreMode::Cas {
            match outcome {
                StoreOutcome::Stored => self.counters.cas_hits += 1,
                StoreOutcome::Exists => self.counters.cas_badval += 1,
                StoreOutcome::NotFound => self.counters.cas_misses += 1,
                _ => {}
            }
        }
        match outcome {
            StoreOutcome::Stored => reply::STORED,
            StoreOutcome::NotStored => reply::NOT_STORED,
            StoreOutcome::Exists => reply::EXISTS,
            StoreOutcome::NotFound => reply::NOT_FOUND,
            StoreOutcome::TooLarge => {
                self.counters.protocol_errors += 1;
                b"SERVER_ERROR object too large for cache\r\n"
            }
            StoreOutcome::OutOfMemory => {
                self.counters.protocol_errors += 1;
                reply::OUT_OF_MEMORY
            }
        }
    }

    fn arith_text(
        &mut self,
        op: ArithOp,
        key: &[u8],
        delta: u64,
        noreply: bool,
        out: &mut BytesMut,
    ) {
        let result = self.node.store.with_entry(key, |e| {
            let Some(it) = e.item() else {
                return ArithResult::NotFound;
            };
            let meta = *it.meta();
            if !live(&meta) {
                return ArithResult::NotFound;
            }
            let Some(n) = parse_counter(it.value()) else {
                return ArithResult::NonNumeric;
            };
            let v = apply_arith(op, n, delta);
            let old_len = it.value().len();
            store_counter(e, v, meta.flags, meta.exptime, 0, Some(old_len))
        });
        self.count_arith(op, &result, false);
        if noreply {
            return;
        }
        match result {
            ArithResult::Value(v, _) => {
                compose_number(out, v);
                out.put_slice(b"\r\n");
            }
            ArithResult::NotFound => out.put_slice(reply::NOT_FOUND),
            ArithResult::NonNumeric => out.put_slice(reply::NON_NUMERIC),
            ArithResult::TooLarge | ArithResult::Exists => out.put_slice(reply::OUT_OF_MEMORY),
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Meta commands.

    fn meta_get(
        &mut self,
        key: &[u8],
        key_as_sent: &[u8],
        flags: &MetaFlags<'_>,
        out: &mut BytesMut,
    ) {
        let now = self.node.clock.now();
        let touch = flags.ttl.map(|t| self.expiry(t));
        let lease_window = self.node.config.lease_window_secs;
        // Only a vivifying mg needs the wall clock (to convert its N); skip the read otherwise.
        let unix_now = match flags.vivify_ttl {
            Some(_) => self.node.clock.unix_now(),
            None => 0,
        };
        let store = &self.node.store;
        let outcome = store.with_entry(key, |e| {
            let Some(it) = e.item() else {
                let Some(n) = flags.vivify_ttl else {
                    if !flags.quiet {
                        compose_meta(
                            out,
                            MetaCode::En,
                            key_as_sent,
                            flags,
                            None,
                            WinFlags::default(),
                            None,
                        );
                    }
                    return MgOutcome::Miss;
                };
                // Miss with N: create the lease placeholder; this reader wins.
                let ttl = if n > 0 { n } else { i64::from(lease_window) };
                // A lease always ends: an N that converts to "never" or "already expired" gets the window.
                let exptime = match convert_exptime(ttl, now, unix_now) {
                    Expiry::At(t) => t,
                    _ => now.saturating_add(lease_window.max(1)),
                };
                // As memcached 1.6: the placeholder takes a CAS number; a hit with N takes none.
                let cas = meta_cas(flags, store);
                if insert(e, NewItem::lease_placeholder(exptime, cas)) != StoreOutcome::Stored {
                    out.put_slice(reply::OUT_OF_MEMORY);
                    return MgOutcome::Miss;
                }
                // The winner's read is the placeholder's first fetch (unless `u`), as memcached: later
                // readers see h1.
                if !flags.no_bump {
                    e.record_read();
                }
                let info = MetaItemInfo {
                    cas,
                    flags: 0,
                    ttl: ttl_remaining(exptime, now),
                    size: 0,
                    hit_before: false,
                    last_access_secs: 0,
                };
                let code = if flags.return_value {
                    MetaCode::Va
                } else {
                    MetaCode::Hd
                };
                let win = WinFlags {
                    win: true,
                    ..WinFlags::default()
                };
                compose_meta(out, code, key_as_sent, flags, Some(&info), win, Some(&[]));
                return MgOutcome::Vivified;
            };
            let meta = *it.meta();
            let placeholder = is_placeholder(&meta);
            let mut win = WinFlags {
                stale: meta.stale,
                ..WinFlags::default()
            };
            if meta.win_sent {
                win.already_sent = true;
            } else if meta.stale {
                win.win = true;
            } else if let Some(r) = flags.recache_ttl {
                if meta.exptime != 0 && i64::from(meta.exptime) - i64::from(now) < r {
                    win.win = true;
                }
            }
            // While a lease is out on the key (a placeholder, or a stale item whose refill was won),
            // T may bring its end closer but not push it back: a lease ends when it was to end.
            // (Before session 31 every reader of `mg k c N5 T600` moved a 5 s lease to 600 s, and
            // `T0` made it never end; memcached re-times such items.) That includes the request that
            // wins a stale item's refill: its T would otherwise keep serving the old value for as long
            // as it says if the winner died (session 32). An expiring T still removes.
            let lease_out = meta.placeholder || (meta.stale && (meta.win_sent || win.win));
            let exptime = match touch {
                Some(Expiry::At(t)) if lease_out && meta.exptime != 0 && t >= meta.exptime => {
                    meta.exptime
                }
                Some(Expiry::Never) if lease_out => meta.exptime,
                Some(Expiry::At(t)) => t,
                Some(Expiry::Never) => 0,
                _ => meta.exptime,
            };
            let info = MetaItemInfo {
                cas: meta.cas,
                flags: meta.flags,
                ttl: ttl_remaining(exptime, now),
                size: it.value().len(),
                hit_before: meta.fetched,
                last_access_secs: now.saturating_sub(meta.last_access),
            };
            let code = if flags.return_value {
                MetaCode::Va
            } else {
                MetaCode::Hd
            };
            reserve_reply(out, key_as_sent.len() + it.value().len() + 128);
            compose_meta(
                out,
                code,
                key_as_sent,
                flags,
                Some(&info),
                win,
                Some(&[it.value()]),
            );
            if win.win || exptime != meta.exptime {
                if let Some(mut m) = e.meta_mut() {
                    m.win_sent |= win.win;
                    m.exptime = exptime;
                }
            }
            if !flags.no_bump {
                e.record_read();
            }
            if touch == Some(Expiry::Expired) {
                e.remove();
            }
            MgOutcome::Hit { placeholder, win }
        });
        // As memcached 1.6 (process_mget_command): an mg whose T touched an item counts as a touch
        // (cmd_touch, touch_hits), not as a get; one that found nothing touched nothing and counts as
        // a get miss, T or not.
        let touched = touch.is_some() && matches!(outcome, MgOutcome::Hit { .. });
        if touched {
            self.counters.cmd_touch += 1;
            self.counters.touch_hits += 1;
        } else {
            self.counters.cmd_get += 1;
        }
        match outcome {
            MgOutcome::Miss => self.counters.get_misses += 1,
            MgOutcome::Vivified => {
                self.counters.get_misses += 1;
                self.counters.lease_grants += 1;
            }
            MgOutcome::Hit { placeholder, win } => {
                if !touched {
                    if placeholder {
                        self.counters.get_misses += 1;
                    } else {
                        self.counters.get_hits += 1;
                    }
                }
                if win.win {
                    self.counters.lease_grants += 1;
                }
                if win.already_sent {
                    self.counters.lease_hot_misses += 1;
                }
                if win.stale {
                    self.counters.lease_stale_served += 1;
                }
            }
        }
    }

    /// A `set` or an `ms` refused for want of memory (or as too large for the store) removes the
    /// item it would have replaced, as memcached 1.6 does ("avoid stale data persisting in cache
    /// because we failed alloc"): the client's new value is refused, and the old one must not be
    /// read in its place.
    fn unlink_if_refused(&self, key: &[u8], outcome: &StoreOutcome) {
        if matches!(outcome, StoreOutcome::OutOfMemory | StoreOutcome::TooLarge) {
            self.node.store.with_entry(key, |e| e.remove());
        }
    }

    fn meta_set(
        &mut self,
        key: &[u8],
        key_as_sent: &[u8],
        flags: &MetaFlags<'_>,
        data: &[u8],
        out: &mut BytesMut,
    ) {
        self.counters.cmd_set += 1;
        let mode = flags.set_mode.unwrap_or(MetaSetMode::Set);
        let exp = self.expiry(flags.ttl.unwrap_or(0));
        let vivify = flags.vivify_ttl.map(|t| self.expiry(t));
        let client_flags = flags.client_flags.unwrap_or(0);
        // The CAS of the item stored (0: nothing stored). Taken only when storing, as memcached 1.6
        // (do_item_link): a refused ms takes no number.
        let mut new_cas = 0;
        let store = &self.node.store;
        // As memcached 1.6: add ignores C, append/prepend compare it only with an item that is there and
        // take C0 as no CAS.
        let compare_cas = match mode {
            MetaSetMode::Add => None,
            MetaSetMode::Append | MetaSetMode::Prepend => flags.compare_cas.filter(|&c| c != 0),
            _ => flags.compare_cas,
        };
        let appends = matches!(mode, MetaSetMode::Append | MetaSetMode::Prepend);
        let max = self.node.config.limits.max_value_len;
        if appends {
            self.take_scratch();
        }
        let scratch = &mut self.scratch;
        let (outcome, lease_refill) = store.with_entry(key, |e| {
            let current = e.item().map(|it| {
                let meta = *it.meta();
                if appends {
                    scratch.clear();
                    scratch.extend_from_slice(it.value());
                }
                (meta, it.value().len())
            });
            let lease_refill = compare_cas.is_some() && current.is_none_or(|(m, _)| !live(&m));
            // Set-to-invalid replaces the value of this item, keeping its TTL and lease token.
            let mut stale_over: Option<ItemMeta> = None;
            if let Some(c) = compare_cas {
                match current {
                    // An append with C on a miss is not stored, N or not: the token it compares was
                    // voided with the item, and vivifying would store a value read before that.
                    None if appends => return (StoreOutcome::NotStored, lease_refill),
                    None => return (StoreOutcome::NotFound, lease_refill),
                    // I with an older CAS in set or replace mode: store, but as stale (memcached's
                    // "set-to-invalid"; an append or prepend with it is EX, as memcached 1.6.18). C0
                    // is not older, as memcached 1.6.18: it is refused (EX).
                    Some((m, _)) if c != 0 && c < m.cas && flags.invalidate && !appends => {
                        stale_over = Some(m)
                    }
                    Some((m, _)) if c != m.cas => return (StoreOutcome::Exists, lease_refill),
                    _ => {}
                }
            }
            let present = current.filter(|(m, _)| live(m)).map(|(m, _)| m);
            let (parts, item_flags, exptime): ([&[u8]; 2], u32, u32) = match (mode, present) {
                // As text add: a placeholder or a stale item is there too.
                (MetaSetMode::Add, _) if current.is_some() => {
                    return (StoreOutcome::NotStored, lease_refill)
                }
                // A replace that carries the token of the placeholder or stale item it found (the C
                // check above passed) is that lease's refill, stored as a set, as memcached 1.6 does;
                // refused, the key stayed won and served Z until its end (session 32). Without a token
                // they are absent to it (SERVER.md, known differences).
                (MetaSetMode::Replace, None) if compare_cas.is_none() => {
                    return (StoreOutcome::NotStored, lease_refill)
                }
                (MetaSetMode::Append | MetaSetMode::Prepend, None) => match vivify {
                    // Append with N autovivifies the missing item.
                    Some(v) => ([data, &[]], client_flags, v.store_time()),
                    None => return (StoreOutcome::NotStored, lease_refill),
                },
                (MetaSetMode::Append, Some(m)) => ([&scratch[..], data], m.flags, m.exptime),
                (MetaSetMode::Prepend, Some(m)) => ([data, &scratch[..]], m.flags, m.exptime),
                _ => {
                    if exp == Expiry::Expired && stale_over.is_none() {
                        // memcached links the item (a CAS number, answered with c) and it expires.
                        new_cas = meta_cas(flags, store);
                        e.remove();
                        return (StoreOutcome::Stored, lease_refill);
                    }
                    ([data, &[]], client_flags, exp.store_time())
                }
            };
            if parts[0].len() + parts[1].len() > max {
                // As text append: NS (memcached's NOT_STORED), the old item kept.
                let outcome = match mode {
                    MetaSetMode::Append | MetaSetMode::Prepend => StoreOutcome::NotStored,
                    _ => StoreOutcome::TooLarge,
                };
                return (outcome, lease_refill);
            }
            // As memcached 1.6 (do_store_item): a set-to-invalid keeps the replaced item's TTL and its
            // token-sent bit, so the reader that already won the refill stays the only winner.
            new_cas = meta_cas(flags, store);
            let r = insert(
                e,
                NewItem {
                    value: &parts,
                    flags: item_flags,
                    exptime: stale_over.map_or(exptime, |m| m.exptime),
                    cas: new_cas,
                    stale: stale_over.is_some(),
                    win_sent: stale_over.is_some_and(|m| m.win_sent),
                    placeholder: false,
                },
            );
            (r, lease_refill)
        });
        self.release_scratch();
        if lease_refill {
            if matches!(outcome, StoreOutcome::Stored) {
                self.counters.lease_sets_stored += 1;
            } else {
                self.counters.lease_sets_refused += 1;
            }
        }
        // As memcached 1.6 (do_store_item): a C turns set and replace into a cas, counted as one
        // whether or not it refills a lease; add, append and prepend with C are not counted as cas.
        if compare_cas.is_some() && matches!(mode, MetaSetMode::Set | MetaSetMode::Replace) {
            match outcome {
                StoreOutcome::Stored => self.counters.cas_hits += 1,
                StoreOutcome::Exists => self.counters.cas_badval += 1,
                StoreOutcome::NotFound => self.counters.cas_misses += 1,
                _ => {}
            }
        }
        // Any mode, as memcached's mset.
        self.unlink_if_refused(key, &outcome);
        let code = match outcome {
            StoreOutcome::Stored => {
                if flags.quiet {
                    return;
                }
                MetaCode::Hd
            }
            StoreOutcome::NotStored => MetaCode::Ns,
            StoreOutcome::Exists => MetaCode::Ex,
            StoreOutcome::NotFound => MetaCode::Nf,
            StoreOutcome::TooLarge => {
                self.counters.protocol_errors += 1;
                out.put_slice(b"SERVER_ERROR object too large for cache\r\n");
                return;
            }
            StoreOutcome::OutOfMemory => {
                self.counters.protocol_errors += 1;
                out.put_slice(reply::OUT_OF_MEMORY);
                return;
            }
        };
        let info = MetaItemInfo {
            // As memcached: a refused set stored nothing, so its CAS is 0.
            cas: if code == MetaCode::Hd { new_cas } else { 0 },
            flags: client_flags,
            size: data.len(),
            ..MetaItemInfo::default()
        };
        // ms returns only c (the new CAS), k, O and b.
        compose_meta_subset(out, code, key_as_sent, flags, &info, b"ckOb", None);
    }

    fn meta_delete(
        &mut self,
        key: &[u8],
        key_as_sent: &[u8],
        flags: &MetaFlags<'_>,
        out: &mut BytesMut,
    ) {
        let exp = flags.ttl.map(|t| self.expiry(t));
        // A CAS number is taken only by what changes the item and keeps it (I, x), as memcached 1.6: a
        // delete, a miss or a mismatch takes none.
        let store = &self.node.store;
        let code = store.with_entry(key, |e| {
            let Some(it) = e.item() else {
                return MetaCode::Nf;
            };
            let meta = *it.meta();
            if let Some(c) = flags.compare_cas {
                if c != meta.cas {
                    return MetaCode::Ex;
                }
            }
            if flags.invalidate && exp == Some(Expiry::Expired) {
                // A T already past ends the item at once, as in memcached: kept, its stale value
                // would be served (with X) for ever. memcached marks it stale (a new CAS) with a TTL
                // already over, so it takes a number here too.
                meta_cas(flags, store);
                e.remove();
            } else if flags.invalidate {
                // Mark stale: the value stays for X readers, the new CAS voids every outstanding token.
                if let Some(mut m) = e.meta_mut() {
                    m.stale = true;
                    m.win_sent = false;
                    m.cas = meta_cas(flags, store);
                    if let Some(exp) = exp {
                        // Never `Expired` here: that removed the item above.
                        m.exptime = exp.store_time();
                    }
                }
            } else if flags.remove_value {
                let exptime = meta.exptime;
                if insert(
                    e,
                    NewItem {
                        value: &[],
                        flags: 0,
                        exptime,
                        cas: meta_cas(flags, store),
                        stale: false,
                        win_sent: false,
                        placeholder: false,
                    },
                ) != StoreOutcome::Stored
                {
                    e.remove();
                }
            } else {
                e.remove();
            }
            MetaCode::Hd
        });
        // As memcached 1.6 (process_mdelete_command): a CAS mismatch is a delete miss, and `I`, which
        // keeps the item, is no delete hit.
        match code {
            MetaCode::Hd if flags.invalidate => self.counters.lease_invalidations += 1,
            MetaCode::Hd => self.counters.delete_hits += 1,
            _ => self.counters.delete_misses += 1,
        }
        // As memcached 1.6: q hides only the success line.
        if flags.quiet && code == MetaCode::Hd {
            return;
        }
        compose_meta_subset(
            out,
            code,
            key_as_sent,
            flags,
            &MetaItemInfo::default(),
            b"kOb",
            None,
        );
    }

    fn meta_arith(
        &mut self,
        key: &[u8],
        key_as_sent: &[u8],
        flags: &MetaFlags<'_>,
        out: &mut BytesMut,
    ) {
        let op = flags.arith_mode.unwrap_or(ArithOp::Incr);
        let delta = flags.delta.unwrap_or(1);
        let now = self.node.clock.now();
        let vivify = flags.vivify_ttl.map(|t| self.expiry(t));
        let touch = flags.ttl.map(|t| self.expiry(t));
        // The CAS of the result (taken only when it is stored, as memcached 1.6: a miss, a mismatch or
        // a non-numeric value takes none).
        let mut new_cas = 0;
        let store = &self.node.store;
        let mut take_cas = || {
            new_cas = meta_cas(flags, store);
            new_cas
        };
        let mut created = false;
        let result = store.with_entry(key, |e| {
            let current = e.item().and_then(|it| {
                let meta = *it.meta();
                live(&meta).then(|| (meta, parse_counter(it.value()), it.value().len()))
            });
            match current {
                None => match vivify {
                    Some(v) => {
                        // As memcached 1.6: a T given with N is the created item's TTL too.
                        let exp = touch.unwrap_or(v);
                        created = true;
                        let initial = flags.initial.unwrap_or(0);
                        let cas = take_cas();
                        let result = store_counter(e, initial, 0, exp.store_time(), cas, None);
                        removed_if_expired(e, exp, result)
                    }
                    None => ArithResult::NotFound,
                },
                Some((meta, n, old_len)) => {
                    // As memcached 1.6 (do_add_delta): an empty value is refused before the CAS is
                    // compared, other non-numeric values after; C0 compares nothing.
                    if n.is_none() && old_len == 0 {
                        return ArithResult::NonNumeric;
                    }
                    if flags.compare_cas.is_some_and(|c| c != 0 && c != meta.cas) {
                        return ArithResult::Exists;
                    }
                    let Some(n) = n else {
                        return ArithResult::NonNumeric;
                    };
                    let exptime = touch.map_or(meta.exptime, Expiry::store_time);
                    let v = apply_arith(op, n, delta);
                    let cas = take_cas();
                    let result = store_counter(e, v, meta.flags, exptime, cas, Some(old_len));
                    match touch {
                        Some(t) => removed_if_expired(e, t, result),
                        None => result,
                    }
                }
            }
        });
        self.count_arith(op, &result, created);
        match result {
            ArithResult::Value(v, exptime) => {
                let mut digits = [0u8; 20];
                let text = format_u64(v, &mut digits);
                let info = MetaItemInfo {
                    cas: new_cas,
                    ttl: ttl_remaining(exptime, now),
                    size: text.len(),
                    ..MetaItemInfo::default()
                };
                // As memcached 1.6.18: q hides an incr/decr's success, with or without v, but not the
                // reply of the ma that created the item.
                if flags.quiet && !created {
                    return;
                }
                // ma returns only c, t, k, O and b (memcached ignores the other flags it takes).
                let returns = b"ctkOb";
                if flags.return_value {
                    compose_meta_subset(
                        out,
                        MetaCode::Va,
                        key_as_sent,
                        flags,
                        &info,
                        returns,
                        Some(text),
                    );
                } else {
                    compose_meta_subset(
                        out,
                        MetaCode::Hd,
                        key_as_sent,
                        flags,
                        &info,
                        returns,
                        None,
                    );
                }
            }
            ArithResult::NotFound => compose_meta_subset(
                out,
                MetaCode::Nf,
                key_as_sent,
                flags,
                &MetaItemInfo::default(),
                b"kOb",
                None,
            ),
            ArithResult::Exists => compose_meta_subset(
                out,
                MetaCode::Ex,
                key_as_sent,
                flags,
                &MetaItemInfo::default(),
                b"kOb",
                None,
            ),
            ArithResult::NonNumeric => out.put_slice(reply::NON_NUMERIC),
            ArithResult::TooLarge => out.put_slice(reply::OUT_OF_MEMORY),
        }
    }

    /// Counts an incr/decr as memcached 1.6 does (do_add_delta, process_marithmetic_command): a hit
    /// once the value was read as a number, a miss when there was no item; a non-numeric value, a CAS
    /// mismatch and an item `ma N` created count as neither.
    fn count_arith(&mut self, op: ArithOp, result: &ArithResult, created: bool) {
        let hit = match result {
            _ if created => return,
            ArithResult::Value(..) | ArithResult::TooLarge => true,
            ArithResult::NotFound => false,
            ArithResult::NonNumeric | ArithResult::Exists => return,
        };
        match (op, hit) {
            (ArithOp::Incr, true) => self.counters.incr_hits += 1,
            (ArithOp::Incr, false) => self.counters.incr_misses += 1,
            (ArithOp::Decr, true) => self.counters.decr_hits += 1,
            (ArithOp::Decr, false) => self.counters.decr_misses += 1,
        }
    }

    fn meta_debug(&mut self, key: &[u8], key_as_sent: &[u8], out: &mut BytesMut) {
        let now = self.node.clock.now();
        let found = self
            .node
            .store
            .with_entry(key, |e| e.item().map(|it| (*it.meta(), it.value().len())));
        match found {
            None => out.put_slice(b"EN\r\n"),
            Some((m, size)) => {
                out.put_slice(b"ME ");
                out.put_slice(key_as_sent);
                let line = format!(
                    " exp={} la={} cas={} fetch={} cls=1 size={}\r\n",
                    ttl_remaining(m.exptime, now),
                    now.saturating_sub(m.last_access),
                    m.cas,
                    if m.fetched { "yes" } else { "no" },
                    size
                );
                out.put_slice(line.as_bytes());
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // mcrouter's lease dialect.

    fn lease_get(&mut self, key: &[u8], out: &mut BytesMut) {
        self.counters.cmd_get += 1;
        let now = self.node.clock.now();
        let window = self.node.config.lease_window_secs.max(1);
        let store = &self.node.store;
        let outcome = store.with_entry(key, |e| {
            let Some(it) = e.item() else {
                let token = lease_token(store);
                let inserted = insert(
                    e,
                    NewItem::lease_placeholder(now.saturating_add(window), token),
                );
                if inserted != StoreOutcome::Stored {
                    // Cannot hold a lease: tell the client to load and not to wait.
                    compose_lease_value(out, key, 0, 0, &[]);
                    return LeaseGetOutcome::Miss {
                        won: false,
                        stale: false,
                    };
                }
                compose_lease_value(out, key, token, 0, &[]);
                return LeaseGetOutcome::Miss {
                    won: true,
                    stale: false,
                };
            };
            let meta = *it.meta();
            if live(&meta) {
                compose_value(out, key, meta.flags, &[it.value()], None);
                e.record_read();
                return LeaseGetOutcome::Hit;
            }
            // Stale item or placeholder.
            if meta.win_sent {
                compose_lease_value(out, key, 1, meta.flags, &[it.value()]);
                return LeaseGetOutcome::Miss {
                    won: false,
                    stale: meta.stale,
                };
            }
            // Stale with no lease out yet: this reader wins; the token is the CAS given at
            // invalidation, or a fresh one where that is 1 (`md KEY I E1` can give it), which a
            // lease-get client reads as "another client holds the lease".
            let token = if meta.cas > 1 {
                meta.cas
            } else {
                lease_token(store)
            };
            compose_lease_value(out, key, token, meta.flags, &[it.value()]);
            if let Some(mut m) = e.meta_mut() {
                m.cas = token;
                m.win_sent = true;
                // A lease always ends, as a placeholder's does: the stale item goes at the end of
                // the window (sooner if its own TTL says so), so if this winner never sets, the next
                // lease-get misses and wins instead of every reader getting a hot miss (token 1)
                // for as long as the item lives (for ever after an `md I` with no T).
                let lease_end = now.saturating_add(window);
                if m.exptime == 0 || m.exptime > lease_end {
                    m.exptime = lease_end;
                }
            }
            LeaseGetOutcome::Miss {
                won: true,
                stale: true,
            }
        });
        out.put_slice(reply::END);
        match outcome {
            LeaseGetOutcome::Hit => self.counters.get_hits += 1,
            LeaseGetOutcome::Miss { won, stale } => {
                self.counters.get_misses += 1;
                if won {
                    self.counters.lease_grants += 1;
                } else {
                    self.counters.lease_hot_misses += 1;
                }
                if stale {
                    self.counters.lease_stale_served += 1;
                }
            }
        }
    }

    fn lease_set(
        &mut self,
        key: &[u8],
        token: u64,
        flags: u32,
        exptime: i64,
        data: &[u8],
    ) -> &'static [u8] {
        self.counters.cmd_set += 1;
        let exp = self.expiry(exptime);
        let outcome = self.node.store.with_entry(key, |e| {
            let valid = token > 1 && e.item().is_some_and(|it| it.meta().cas == token);
            if !valid {
                return StoreOutcome::NotStored;
            }
            if exp == Expiry::Expired {
                e.remove();
                return StoreOutcome::Stored;
            }
            insert(
                e,
                NewItem {
                    value: &[data],
                    flags,
                    exptime: exp.store_time(),
                    cas: 0,
                    stale: false,
                    win_sent: false,
                    placeholder: false,
                },
            )
        });
        match outcome {
            StoreOutcome::Stored => {
                self.counters.lease_sets_stored += 1;
                reply::STORED
            }
            StoreOutcome::TooLarge => {
                self.counters.protocol_errors += 1;
                b"SERVER_ERROR object too large for cache\r\n"
            }
            StoreOutcome::OutOfMemory => {
                self.counters.protocol_errors += 1;
                reply::OUT_OF_MEMORY
            }
            _ => {
                self.counters.lease_sets_refused += 1;
                reply::NOT_STORED
            }
        }
    }

    // ------------------------------------------------------------------------------------------------
    // stats.

    fn stats(&mut self, group: Option<&[u8]>, args: [Option<&[u8]>; 2], out: &mut BytesMut) {
        // Make this connection's own counts visible to itself.
        self.node.counters.current().drain_from(&mut self.counters);
        match group {
            None => {
                for (name, value) in self.node.stats_lines() {
                    compose_stat(out, name, value);
                }
                out.put_slice(reply::END);
            }
            Some(b"settings") => {
                for (name, value) in self.node.settings_lines() {
                    compose_stat(out, name, value);
                }
                out.put_slice(reply::END);
            }
            Some(b"reset") => {
                self.node.counters.reset();
                self.node.store.reset_counters();
                out.put_slice(reply::RESET);
            }
            Some(b"slabs") => {
                for (name, value) in self.node.slabs_lines() {
                    compose_stat(out, &name, value);
                }
                out.put_slice(reply::END);
            }
            Some(b"items") => {
                for (name, value) in self.node.items_lines() {
                    compose_stat(out, &name, value);
                }
                out.put_slice(reply::END);
            }
            Some(b"sizes" | b"conns") => out.put_slice(reply::END),
            Some(b"cachedump") => self.cachedump(args, out),
            Some(_) => {
                self.counters.protocol_errors += 1;
                out.put_slice(b"ERROR\r\n");
            }
        }
    }

    /// memcached's `stats cachedump CLASS LIMIT`: `ITEM key [N b; T s]` for up to LIMIT items (0: all)
    /// of size class CLASS as `stats items` numbers them, T the absolute Unix expiry (0: none), then
    /// `END`; at most 2 MB of lines, as memcached. Key-listing tools (libmemcached's `memcdump`, the
    /// Node `memcached` package's `items` + `cachedump`) rely on it; until session 32 it was `ERROR`.
    /// Classes are numbered as `stats items` numbers them ([`crate::store::class_id`]: memcached's
    /// ids, 1 to 63, each grouping the chunk sizes its class would hold); a larger id is refused as
    /// memcached refuses it. Items are walked by chunk size and shard, not in LRU order (memcached
    /// 1.6 walks one class's cold LRU, so it leaves out items not yet aged out of the hot one; here
    /// every item of the class is listed).
    fn cachedump(&mut self, args: [Option<&[u8]>; 2], out: &mut BytesMut) {
        /// memcached's bound on one dump's reply.
        const MAX_DUMP_BYTES: usize = 2 << 20;
        let [Some(class), Some(limit)] = args else {
            self.counters.protocol_errors += 1;
            out.put_slice(b"CLIENT_ERROR bad command line\r\n");
            return;
        };
        let (Some(class), Some(limit)) = (parse_u64(class), parse_u64(limit)) else {
            self.counters.protocol_errors += 1;
            out.put_slice(b"CLIENT_ERROR bad command line format\r\n");
            return;
        };
        let Some(class) = u32::try_from(class).ok().filter(|&c| c <= MAX_CLASS_ID) else {
            self.counters.protocol_errors += 1;
            out.put_slice(b"CLIENT_ERROR Illegal slab id\r\n");
            return;
        };
        let unix_offset = self.unix_offset();
        let limit = if limit == 0 { u64::MAX } else { limit };
        let (start, mut listed) = (out.len(), 0u64);
        let from = ItemCursor::default();
        self.node.store.visit_items(
            from,
            |id| id == class,
            |item| {
                let expires = match item.meta.exptime {
                    0 => 0,
                    exptime => unix_offset + u64::from(exptime),
                };
                let line = format!(" [{} b; {expires} s]\r\n", item.value_len);
                if out.len() - start + 5 + item.key.len() + line.len() > MAX_DUMP_BYTES {
                    return false;
                }
                out.put_slice(b"ITEM ");
                out.put_slice(item.key);
                out.put_slice(line.as_bytes());
                listed += 1;
                listed < limit
            },
        );
        out.put_slice(reply::END);
    }

    /// Seconds to add to a clock second to make it a Unix time.
    fn unix_offset(&self) -> u64 {
        let clock = self.node.store.clock();
        clock.unix_now().saturating_sub(u64::from(clock.now()))
    }

    /// memcached's `lru_crawler metadump all|hash|ID[,ID...]`: a line per item of those classes,
    /// `key=K exp=E la=L cas=C fetch=yes|no cls=ID size=N` ending in a bare `\n`, K URL-encoded,
    /// E the Unix expiry (-1: none), L the Unix time of the last access, N the bytes the item takes
    /// here (memcached's header differs), then `END`; `BADCLASS invalid class id` for an id outside
    /// 1 to 63 (all as memcached 1.6.18). `memcached-tool HOST dump|keys` read it. Every item is
    /// listed, however many: the reply goes out in batches of about [`MAX_BATCH_REPLY_BYTES`]
    /// ([`Flow::Unfinished`]), the walk resuming where the last batch stopped (memcached's crawler
    /// likewise streams from a walk, not a snapshot). Lease placeholders are left out, as in
    /// `stats cachedump`.
    fn metadump(&mut self, classes: &[u8], out: &mut BytesMut) -> Flow {
        const MAX_ID: u64 = MAX_CLASS_ID as u64;
        let mut wanted = [false; MAX_CLASS_ID as usize + 1];
        if classes == b"all" || classes == b"hash" {
            wanted[1..].fill(true);
        } else {
            for id in classes.split(|&b| b == b',') {
                match parse_u64(id) {
                    Some(id @ 1..=MAX_ID) => wanted[id as usize] = true,
                    _ => {
                        self.counters.protocol_errors += 1;
                        out.put_slice(b"BADCLASS invalid class id\r\n");
                        return Flow::Continue;
                    }
                }
            }
        }
        let unix_offset = self.unix_offset();
        let from = self.metadump_resume_at.take().unwrap_or_default();
        let resume = self.node.store.visit_items(
            from,
            |id| wanted[id as usize],
            |item| {
                out.put_slice(b"key=");
                uri_encode(item.key, out);
                let meta = &item.meta;
                let expires = match meta.exptime {
                    0 => -1,
                    exptime => (unix_offset + u64::from(exptime)) as i64,
                };
                let last_access = unix_offset + u64::from(meta.last_access);
                let fetched = if meta.fetched { "yes" } else { "no" };
                let line = format!(
                    " exp={expires} la={last_access} cas={} fetch={fetched} cls={} size={}\n",
                    meta.cas, item.class, item.size
                );
                out.put_slice(line.as_bytes());
                out.len() < MAX_BATCH_REPLY_BYTES
            },
        );
        if resume.is_some() {
            self.metadump_resume_at = resume;
            return Flow::Unfinished;
        }
        out.put_slice(reply::END);
        Flow::Continue
    }

    /// Hands the append/prepend scratch buffer to this thread's kept large buffer
    /// ([`give_large_buffer`]) if a large value grew it, so an idle connection does not keep a
    /// copy-sized buffer for good. (A fresh copy-sized buffer per append, faulted in page by page,
    /// made appends to a value growing to 1 MB about 10x slower than memcached's; session 34.)
    fn release_scratch(&mut self) {
        if self.scratch.capacity() > MAX_KEPT_BUFFER_BYTES {
            give_large_buffer(std::mem::take(&mut self.scratch));
        }
    }

    /// Before an append or prepend: this thread's kept large buffer ([`take_large_buffer`]) as the
    /// scratch buffer, if this session has only a small one.
    fn take_scratch(&mut self) {
        if self.scratch.capacity() <= MAX_KEPT_BUFFER_BYTES {
            if let Some(large) = take_large_buffer() {
                self.scratch = large;
            }
        }
    }

    /// Adds this session's counters into the node's.
    pub fn flush_counters(&mut self) {
        self.node.counters.current().drain_from(&mut self.counters);
    }
}

/// `key` as memcached's `uriencode` writes it (metadump): bytes other than letters, digits and
/// `-._~` as `%XX`.
fn uri_encode(key: &[u8], out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.put_u8(b);
        } else {
            out.put_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[derive(Clone, Copy)]
enum MgOutcome {
    Miss,
    Vivified,
    Hit { placeholder: bool, win: WinFlags },
}

enum LeaseGetOutcome {
    Hit,
    Miss { won: bool, stale: bool },
}

enum ArithResult {
    /// The new value and the item's exptime.
    Value(u64, u32),
    NotFound,
    NonNumeric,
    Exists,
    TooLarge,
}

impl PartialEq for StoreOutcome {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

fn insert(e: &mut Entry<'_>, item: NewItem<'_>) -> StoreOutcome {
    match e.insert(item) {
        Ok(()) => StoreOutcome::Stored,
        Err(StoreError::TooLarge { .. }) => StoreOutcome::TooLarge,
        Err(StoreError::OutOfMemory) => StoreOutcome::OutOfMemory,
        Err(StoreError::BadKey(_)) => StoreOutcome::NotStored,
    }
}

/// Sets the expiry of a live item; `Expired` removes it. False if there is no live item.
fn touch_entry(e: &mut Entry<'_>, exp: Expiry) -> bool {
    let Some(it) = e.item() else {
        return false;
    };
    if !live(it.meta()) {
        return false;
    }
    match exp {
        Expiry::Expired => {
            e.remove();
        }
        Expiry::Never | Expiry::At(_) => {
            if let Some(mut m) = e.meta_mut() {
                m.exptime = exp.store_time();
            }
        }
    }
    true
}

/// A counter value as memcached 1.6 reads it (`safe_strtoull` on the value): optional leading whitespace and
/// `+`, decimal digits within u64, then the end or whitespace followed by anything (`5 xy` is 5; so is the
/// space-padded `7  ` memcached leaves after a decr). `-` is refused (memcached refuses it when the result
/// would be negative as an i64 and otherwise wraps; cache-node always refuses).
fn parse_counter(value: &[u8]) -> Option<u64> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = value.iter().position(|b| !is_space(b))?;
    let rest = &value[start..];
    let rest = rest.strip_prefix(b"+").unwrap_or(rest);
    let digits = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if digits == 0 || !rest[digits..].first().is_none_or(is_space) {
        return None;
    }
    rest[..digits].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn apply_arith(op: ArithOp, n: u64, delta: u64) -> u64 {
    match op {
        ArithOp::Incr => n.wrapping_add(delta),
        ArithOp::Decr => n.saturating_sub(delta),
    }
}

/// Stores an incr/decr result; `old_len`: the length of the value it replaces, `None` when it creates
/// the item (`ma` with `N`). memcached 1.6 writes a result no longer than the old value in place,
/// space-padded to the old length (when no response still holds the item); protocol.txt tells
/// clients not to rely on the padding, and cache-node does not copy it, but it counts such a result
/// as memcached does: a rewrite, not a new item in `total_items`.
fn store_counter(
    e: &mut Entry<'_>,
    v: u64,
    flags: u32,
    exptime: u32,
    cas: u64,
    old_len: Option<usize>,
) -> ArithResult {
    let mut digits = [0u8; 20];
    let text = format_u64(v, &mut digits);
    let item = NewItem {
        value: &[text],
        flags,
        exptime,
        cas,
        stale: false,
        win_sent: false,
        placeholder: false,
    };
    let stored = if old_len.is_some_and(|old| text.len() <= old) {
        e.rewrite(item)
    } else {
        e.insert(item)
    };
    match stored {
        Ok(()) => ArithResult::Value(v, exptime),
        Err(_) => ArithResult::TooLarge,
    }
}

/// An arithmetic result whose TTL is already over is answered (as memcached) but not kept: `store_time`'s
/// placeholder second is not in the past while the clock is still at second 0 or 1.
fn removed_if_expired(e: &mut Entry<'_>, exp: Expiry, result: ArithResult) -> ArithResult {
    if exp == Expiry::Expired && matches!(result, ArithResult::Value(..)) {
        e.remove();
    }
    result
}

/// The CAS of what a meta command stores or marks: its `E` flag's, else the store's next number. Called
/// only where something is stored or marked, so a request that changes nothing takes no number, as in
/// memcached 1.6.
fn meta_cas(flags: &MetaFlags<'_>, store: &Store) -> u64 {
    flags.new_cas.unwrap_or_else(|| store.next_cas())
}

/// A token for mcrouter's `lease-get`: never 0, never 1 (1 means "hot miss" in that dialect). Taken only
/// when a placeholder is made, as every CAS here: a request that stores nothing takes no number.
fn lease_token(store: &Store) -> u64 {
    loop {
        let c = store.next_cas();
        if c > 1 {
            return c;
        }
    }
}

/// Reads a shared counter (for tests and metrics).
pub fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock second and the Unix second it matches, as a node some time after its start sees them.
    const NOW: u32 = 1000;
    const UNIX_NOW: u64 = 1_700_000_000;

    fn at_now(exptime: i64) -> Expiry {
        convert_exptime(exptime, NOW, UNIX_NOW)
    }

    /// memcached's rule (`realtime()` in memcached.c): 0 never expires, a negative exptime is already
    /// expired, up to 30 days (2,592,000 s, `REALTIME_MAXDELTA`) is seconds from now on the node's clock,
    /// and anything above is a Unix time. A boundary moved by one (`>=` for `>`) turns 30 days into a
    /// second of 1970, expired; a relative time not added to the clock's second (`At(relative)`) expires
    /// NOW seconds early.
    #[test]
    fn exptime_is_relative_up_to_30_days_and_a_unix_time_above() {
        assert_eq!(REALTIME_MAXDELTA, 2_592_000);
        assert_eq!(at_now(0), Expiry::Never);
        assert_eq!(at_now(1), Expiry::At(NOW + 1));
        assert_eq!(at_now(2_592_000), Expiry::At(NOW + 2_592_000));
        // One second more is a Unix time: 1970-01-31, long past.
        assert_eq!(at_now(2_592_001), Expiry::Expired);
        // A Unix time ahead is that many seconds from now; the present and the past are expired.
        assert_eq!(at_now(UNIX_NOW as i64 + 100), Expiry::At(NOW + 100));
        assert_eq!(
            at_now(UNIX_NOW as i64 + 2_592_001),
            Expiry::At(NOW + 2_592_001)
        );
        assert_eq!(at_now(UNIX_NOW as i64), Expiry::Expired);
        assert_eq!(at_now(UNIX_NOW as i64 - 5), Expiry::Expired);
        assert_eq!(at_now(-1), Expiry::Expired);
        assert_eq!(at_now(i64::MIN), Expiry::Expired);
    }
}
