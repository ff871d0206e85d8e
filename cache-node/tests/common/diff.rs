//! What the two differential tests against a real memcached share: `memcached_diff.rs` (one request at a
//! time, in lockstep) and `memcached_pipeline_diff.rs` (whole batches, pipelined). Requests (`Piece`,
//! `Req`, `Data`), the generators of the small text and meta requests and of the malformed requests both
//! send, the normalisation of replies (CAS values to placeholders, TTLs, memcached's padded incr/decr
//! results) and the property-test loop. Where the two tests generate different things, a [`Gen`] set in
//! each test says what, and why.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hasher as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use super::{Memcached, TestServer};

/// Keys per case.
pub const KEYS: u8 = 5;
/// A CAS value no item has in a test run (both servers count CAS values up from 1: cache-node is
/// started with `first_cas` 0, as memcached, instead of at the wall clock).
pub const NEVER_ISSUED_CAS: u64 = 1 << 40;

// ------------------------------------------------------------------------------------------------
// Requests.

/// A CAS value to send: the token behind a placeholder seen earlier in this case (modulo the number seen),
/// or a literal (a wrong value, unless by chance).
#[derive(Debug, Clone)]
pub enum Cas {
    Seen(usize),
    Literal(u64),
}

#[derive(Debug, Clone)]
pub enum Piece {
    Text(String),
    /// Key `i` of the case.
    Key(u8),
    /// A key of 251 bytes, one over the limit.
    LongKey,
    /// Key `i` of the case in base64, for the meta `b` flag.
    Base64Key(u8),
    /// `n` bytes in base64, for the meta `b` flag: 186 are 248 characters, within memcached's 250-byte
    /// bound on the key as sent, 189 are 252, over it (both decode to under 250).
    LongBase64Key(usize),
    /// `prefix` followed by a CAS value, resolved per server when sent (see `CasMap::resolve`).
    Cas(&'static str, Cas),
}

pub fn text(s: impl Into<String>) -> Piece {
    Piece::Text(s.into())
}

/// A data block.
#[derive(Debug, Clone)]
pub enum Data {
    /// Sent as is (the terminator included).
    Raw(Vec<u8>),
    /// `len` lower-case letters cycling from `start`, then `\r\n` (or `XY`, a bad data chunk, when `bad_end`).
    Pattern {
        len: usize,
        start: u8,
        bad_end: bool,
    },
}

impl Data {
    pub fn render(&self, out: &mut Vec<u8>) {
        match self {
            Data::Raw(d) => out.extend_from_slice(d),
            Data::Pattern {
                len,
                start,
                bad_end,
            } => {
                out.extend((0..*len).map(|i| b'a' + ((i + usize::from(*start)) % 26) as u8));
                out.extend_from_slice(if *bad_end { b"XY" } else { b"\r\n" });
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Data::Raw(d) => format!("{:?}", String::from_utf8_lossy(d)),
            Data::Pattern {
                len,
                start,
                bad_end,
            } => format!(
                "<{len} letters from '{}'>{}",
                (b'a' + start % 26) as char,
                if *bad_end { "XY" } else { "\\r\\n" }
            ),
        }
    }

    /// A value of more than 16 KiB: cache-node holds room in the store for it while it arrives.
    pub fn is_big(&self) -> bool {
        matches!(self, Data::Pattern { len, .. } if *len > 16 * 1024)
    }
}

/// One request: a line of space-separated pieces and an optional data block (with its terminator).
#[derive(Debug, Clone)]
pub struct Req {
    pub line: Vec<Piece>,
    pub data: Option<Data>,
}

impl Req {
    /// The line without its `\r\n`, keys under `prefix`, CAS values as `cas` resolves them.
    pub fn line(&self, prefix: &str, cas: &CasMap) -> String {
        let mut out = String::new();
        for (i, piece) in self.line.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            match piece {
                Piece::Text(s) => out.push_str(s),
                Piece::Key(k) => write!(out, "{prefix}k{k}").unwrap(),
                Piece::LongKey => out.push_str(&"L".repeat(251)),
                Piece::Base64Key(k) => out.push_str(&STANDARD.encode(format!("{prefix}k{k}"))),
                Piece::LongBase64Key(n) => out.push_str(&STANDARD.encode(vec![b'B'; *n])),
                Piece::Cas(p, c) => write!(out, "{p}{}", cas.resolve(c)).unwrap(),
            }
        }
        out
    }

    pub fn render(&self, prefix: &str, cas: &CasMap, out: &mut Vec<u8>) {
        out.extend_from_slice(self.line(prefix, cas).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(d) = &self.data {
            d.render(out);
        }
    }

    /// The request for a report: a long line cut short, a data block described.
    pub fn describe(&self, prefix: &str, cas: &CasMap) -> String {
        let mut line = self.line(prefix, cas);
        if line.len() > 200 {
            let words = line.split(' ').count();
            line = format!("{}... ({words} words)", &line[..160]);
        }
        match &self.data {
            Some(d) => format!("{line:?} + {}", d.describe()),
            None => format!("{line:?}"),
        }
    }

    /// The key (as `Piece::Key` or `Piece::Base64Key` names it) of an incr, decr or ma.
    pub fn arithmetic_key(&self) -> Option<u8> {
        match self.line.first() {
            Some(Piece::Text(verb)) if matches!(verb.as_str(), "incr" | "decr" | "ma") => {}
            _ => return None,
        }
        self.line.iter().find_map(|p| match p {
            Piece::Key(k) | Piece::Base64Key(k) => Some(*k),
            _ => None,
        })
    }

    /// The request is the bare word `command` (`mn`, `quit`).
    pub fn is(&self, command: &str) -> bool {
        matches!(&self.line[..], [Piece::Text(t)] if t == command)
    }
}

pub fn block(value: &[u8]) -> Option<Data> {
    let mut d = value.to_vec();
    d.extend_from_slice(b"\r\n");
    Some(Data::Raw(d))
}

// ------------------------------------------------------------------------------------------------
// Generation.

pub fn key() -> impl Strategy<Value = u8> {
    0..KEYS
}

/// Keys 0 and 1 take incr/decr, 2 and 3 (and 4 for meta) append/prepend, never both: memcached space-pads
/// a counter that got shorter (see `normalise`), and `7  ` + `a` is the counter 7 for memcached where
/// cache-node's `7a` is not a number.
pub fn counter_key() -> impl Strategy<Value = u8> {
    0..2u8
}

pub fn appended_key(k: u8) -> u8 {
    2 + k % (KEYS - 3)
}

/// Keys text storage commands use: not the last, which meta commands name in base64 (see `meta_request`).
pub fn text_key() -> impl Strategy<Value = u8> {
    0..KEYS - 1
}

pub fn keys() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(key(), 1..4)
}

pub fn with_noreply(mut line: Vec<Piece>, noreply: bool) -> Vec<Piece> {
    if noreply {
        line.push(text("noreply"));
    }
    line
}

/// A T or N flag whose TTL (from `Gen::exptime`) expires the item at once: every such value either test
/// generates.
pub fn expires_now(flag: &str) -> bool {
    flag.starts_with(['T', 'N']) && matches!(&flag[1..], "-1" | "-100" | "2592001" | "1000000000")
}

/// A meta flag: a literal token, or a CAS flag (`C<cas>`).
pub fn meta_flags(pool: Vec<BoxedStrategy<Piece>>) -> impl Strategy<Value = Vec<Piece>> {
    // Each flag at most once (duplicates are refused by both, but that is one case, not the point), in a
    // random order: memcached returns flags in request order.
    let n = pool.len();
    pool.prop_flat_map(move |all| prop::sample::subsequence(all, 0..=n.min(6)).prop_shuffle())
}

pub fn lit(s: impl Into<String>) -> BoxedStrategy<Piece> {
    Just(text(s)).boxed()
}

pub fn num_flag(
    p: &'static str,
    s: impl Strategy<Value = String> + 'static,
) -> BoxedStrategy<Piece> {
    s.prop_map(move |v| text(format!("{p}{v}"))).boxed()
}

/// The `O` flag: a short number, and with `long` now and then 30 to 32 characters around memcached's
/// bound (32 bytes with the `O`: one more is `CLIENT_ERROR opaque token too long`). Only for ms and md:
/// memcached 1.6.18 runs an mg or ma before it refuses its long opaque, cache-node does not (a known
/// difference), so later replies would differ.
pub fn opaque(long: bool) -> BoxedStrategy<Piece> {
    let max = cache_node::protocol::MAX_OPAQUE_LEN;
    let short = (0u32..1000).prop_map(|o| o.to_string()).boxed();
    if !long {
        return num_flag("O", short);
    }
    let value = prop_oneof![
        4 => short,
        1 => proptest::string::string_regex(&format!("[a-z0-9]{{{},{}}}", max - 2, max))
            .unwrap()
            .boxed(),
    ];
    num_flag("O", value)
}

/// One of `flags`: a flag memcached 1.6.18 takes on every meta command and that this command ignores
/// (`protocol::META_FLAGS` less the command's own), with its token when it has one.
pub fn foreign(flags: &[&'static str]) -> BoxedStrategy<Piece> {
    for f in flags {
        assert!(
            cache_node::protocol::META_FLAGS.contains(&f.as_bytes()[0]),
            "{f}"
        );
    }
    prop::sample::select(flags.to_vec()).prop_map(text).boxed()
}

/// A meta command without a data block: `command key flags...`.
pub fn meta_line(command: &str, key: u8, flags: Vec<Piece>) -> Req {
    let mut line = vec![text(command), Piece::Key(key)];
    line.extend(flags);
    Req { line, data: None }
}

/// `base` and each of `extras` (weight 1).
fn with_extras(
    mut base: Vec<(u32, BoxedStrategy<String>)>,
    extras: &'static [&'static str],
) -> BoxedStrategy<String> {
    base.extend(extras.iter().map(|e| (1, Just(e.to_string()).boxed())));
    Union::new_weighted(base).boxed()
}

fn just(s: &'static str) -> BoxedStrategy<String> {
    Just(s.to_string()).boxed()
}

/// What the two tests generate differently. Each test's `GEN` says why it sets what it sets.
#[derive(Clone, Copy)]
pub struct Gen {
    /// How often a text command gets `noreply`.
    pub noreply: f64,
    /// Client flags besides 0, 2^32 - 1 and random ones.
    pub extra_flags: &'static [&'static str],
    /// Expiry times besides 0, -1, 3600, 2592000 (30 days, the largest relative one) and 1000000000 (an
    /// absolute time in the past); one that expires an item at once must be in `expires_now`.
    pub extra_exptimes: &'static [&'static str],
    /// incr/decr deltas besides 0-19, `max_number` and random ones up to it.
    pub extra_deltas: &'static [&'static str],
    /// The meta `C` flag (on `ms`, `md`, `ma`).
    pub cas_flag: fn() -> BoxedStrategy<Piece>,
    /// The weight of a keyed meta command against a bare `mn` (1).
    pub keyed_meta_weight: u32,
    /// The largest number a value or a delta may be (`u64::MAX`: no bound). memcached 1.6 misreads a
    /// counter of 2^63 or more now and then: its `safe_strtoull` looks for a `-` with `strchr`, which
    /// reads on past the value (not NUL-terminated in the slab) into whatever bytes follow it, and calls
    /// the value non-numeric if one is there. Its answer then depends on memory, not on the requests;
    /// each test keeps its arithmetic off such values (see its `GEN`).
    pub max_number: u64,
}

impl Gen {
    /// Values: small letters (never `MN`, the reply terminator, which is upper case), numbers for
    /// incr/decr up to `max_number` (the u64 edges when it allows them; 2^64 is not a number to either
    /// server), and empty. No negative numbers: memcached's strtoull takes `-N` as 2^64 - N when that is
    /// below 2^63 (`-11000000000000000000` is a counter), a quirk cache-node does not copy.
    pub fn value(self) -> BoxedStrategy<Vec<u8>> {
        let max = self.max_number;
        let literals: Vec<&'static str> = [
            "0",
            "1",
            "9",
            "10",
            "42",
            "100",
            "18446744073709551615",
            "18446744073709551614",
            "18446744073709551616",
            "007",
            "12abc",
            "",
        ]
        .into_iter()
        .filter(|v| v.parse::<u64>().map_or(true, |n| n <= max))
        .collect();
        prop_oneof![
            4 => "[a-z]{0,12}".prop_map(String::into_bytes),
            3 => prop::sample::select(literals).prop_map(|v| v.as_bytes().to_vec()),
            1 => (0..=max).prop_map(|n| n.to_string().into_bytes()),
        ]
        .boxed()
    }

    pub fn flags(self) -> BoxedStrategy<String> {
        with_extras(
            vec![
                (3, just("0")),
                (1, just("4294967295")),
                (1, any::<u32>().prop_map(|f| f.to_string()).boxed()),
            ],
            self.extra_flags,
        )
    }

    /// Expiry times that need no wall time to pass: never, already expired (negative, or an absolute time
    /// in the past), or far away (an hour; 30 days).
    pub fn exptime(self) -> BoxedStrategy<String> {
        with_extras(
            vec![
                (4, just("0")),
                (2, just("-1")),
                (2, just("3600")),
                (1, just("2592000")),
                (1, just("1000000000")),
            ],
            self.extra_exptimes,
        )
    }

    pub fn delta(self) -> BoxedStrategy<String> {
        with_extras(
            vec![
                (4, (0u64..20).prop_map(|d| d.to_string()).boxed()),
                (1, Just(self.max_number.to_string()).boxed()),
                (1, (0..=self.max_number).prop_map(|d| d.to_string()).boxed()),
            ],
            self.extra_deltas,
        )
    }

    pub fn noreply(self) -> impl Strategy<Value = bool> {
        prop::bool::weighted(self.noreply)
    }

    /// `get`/`gets` of 1-3 keys.
    pub fn retrieval(self) -> impl Strategy<Value = Req> {
        (prop_oneof![Just("get"), Just("gets")], keys()).prop_map(|(verb, ks)| {
            let mut line = vec![text(verb)];
            line.extend(ks.into_iter().map(Piece::Key));
            Req { line, data: None }
        })
    }

    /// `gat`/`gats` of 1-3 keys.
    pub fn touch_retrieval(self) -> impl Strategy<Value = Req> {
        (
            prop_oneof![Just("gat"), Just("gats")],
            self.exptime(),
            keys(),
        )
            .prop_map(|(verb, exp, ks)| {
                let mut line = vec![text(verb), text(exp)];
                line.extend(ks.into_iter().map(Piece::Key));
                Req { line, data: None }
            })
    }

    /// Text commands: retrieval, delete, incr/decr and touch, and `own` (storage commands and more, as
    /// each test has them), with their weights.
    pub fn text_request(self, own: Vec<(u32, BoxedStrategy<Req>)>) -> impl Strategy<Value = Req> {
        let mut all = vec![
            (4, self.retrieval().boxed()),
            (2, self.touch_retrieval().boxed()),
            (2, self.delete().boxed()),
            (3, self.arith().boxed()),
            (1, self.touch().boxed()),
        ];
        all.extend(own);
        Union::new_weighted(all)
    }

    /// `set`, `add`, `replace`, `append` or `prepend`.
    pub fn storage_verb() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("set"),
            Just("add"),
            Just("replace"),
            Just("append"),
            Just("prepend")
        ]
    }

    /// A text storage command of a small value; `cas` is the CAS value a `cas` verb sends.
    pub fn storage(
        self,
        verb: impl Strategy<Value = &'static str>,
        cas: impl Strategy<Value = Piece>,
    ) -> impl Strategy<Value = Req> {
        (
            verb,
            text_key(),
            self.flags(),
            self.exptime(),
            self.value(),
            cas,
            self.noreply(),
        )
            .prop_map(|(verb, k, f, e, v, c, nr)| {
                let k = if verb.ends_with("pend") {
                    appended_key(k)
                } else {
                    k
                };
                let mut line = vec![
                    text(verb),
                    Piece::Key(k),
                    text(f),
                    text(e),
                    text(v.len().to_string()),
                ];
                if verb == "cas" {
                    line.push(c);
                }
                Req {
                    line: with_noreply(line, nr),
                    data: block(&v),
                }
            })
    }

    pub fn delete(self) -> impl Strategy<Value = Req> {
        (key(), self.noreply()).prop_map(|(k, nr)| Req {
            line: with_noreply(vec![text("delete"), Piece::Key(k)], nr),
            data: None,
        })
    }

    pub fn arith(self) -> impl Strategy<Value = Req> {
        (
            prop_oneof![Just("incr"), Just("decr")],
            counter_key(),
            self.delta(),
            self.noreply(),
        )
            .prop_map(|(verb, k, d, nr)| Req {
                line: with_noreply(vec![text(verb), Piece::Key(k), text(d)], nr),
                data: None,
            })
    }

    pub fn touch(self) -> impl Strategy<Value = Req> {
        (key(), self.exptime(), self.noreply()).prop_map(|(k, e, nr)| Req {
            line: with_noreply(vec![text("touch"), Piece::Key(k), text(e)], nr),
            data: None,
        })
    }

    /// Meta requests. `leases` adds `N` (a lease placeholder on a miss), `R` and `md I`, which text
    /// commands see differently (a known difference), so those cases use no text commands.
    pub fn meta_request(self, leases: bool) -> BoxedStrategy<Req> {
        let mut mg_pool = vec![
            lit("v"),
            lit("k"),
            lit("c"),
            lit("f"),
            lit("t"),
            lit("q"),
            lit("u"),
            opaque(false),
            num_flag("T", self.exptime()),
            foreign(&["C5", "D5", "F5", "I", "J5", "L", "MZ", "P"]),
        ];
        if leases {
            // s and h only where there is no incr/decr: memcached's size counts the spaces that pad a
            // number that got shorter (see `normalise`), and an incr/decr in place keeps the item's fetched
            // bit (a longer result is a new, unfetched item); cache-node's result is always a new item.
            mg_pool.push(lit("s"));
            mg_pool.push(lit("h"));
            mg_pool.push(num_flag("N", Just("30".to_string())));
            mg_pool.push(num_flag(
                "R",
                prop_oneof![Just("30"), Just("7200")].prop_map(str::to_string),
            ));
        }
        let mg = (key(), meta_flags(mg_pool)).prop_map(move |(k, mut fl)| {
            // Known difference: memcached reads the TTL for `t` and `R` as of their place among the flags
            // (`t T60` gives the TTL before the touch, `T60 t` after; `t N30` on a miss t-1; `T3600 R7200`
            // wins, `R7200 T3600` does not); cache-node's t is after the touch, its R before. So R, then T
            // and N, then the rest.
            fl.sort_by_key(|p| match p {
                Piece::Text(t) if t.starts_with('R') => 0,
                Piece::Text(t) if t.starts_with(['T', 'N']) => 1,
                _ => 2,
            });
            // Known difference: a T that expires the item at once makes memcached's t a wrapped negative
            // number (t4294967235) and its R sees a TTL below the threshold (W); cache-node answers t-1 and
            // no W. So no t or R with such a T.
            // Known difference: memcached gives a placeholder created by `mg N` the TTL of a T on the same
            // request (T0: a lease that never ends); cache-node keeps N's, a lease always ends. So no T
            // with N.
            if fl
                .iter()
                .any(|p| matches!(p, Piece::Text(t) if t.starts_with('N')))
            {
                fl.retain(|p| !matches!(p, Piece::Text(t) if t.starts_with('T')));
            }
            // Known difference: while a lease is out on a key (a placeholder, or a stale item whose
            // refill was won), memcached's T re-times it, T0 to never; cache-node's T can only bring
            // its end closer. TTLs compare as t-1/t+, so only T0 shows it: no T0 where leases are.
            if leases {
                fl.retain(|p| !matches!(p, Piece::Text(t) if t == "T0"));
            }
            if fl
                .iter()
                .any(|p| matches!(p, Piece::Text(t) if expires_now(t)))
            {
                fl.retain(|p| !matches!(p, Piece::Text(t) if t == "t" || t.starts_with('R')));
            }
            meta_line("mg", k, fl)
        });

        let mut ms_pool = vec![
            lit("c"),
            lit("k"),
            lit("q"),
            lit("s"),
            opaque(true),
            (self.cas_flag)(),
            num_flag("T", self.exptime()),
            num_flag("F", self.flags()),
            foreign(&[
                "f", "h", "l", "t", "u", "v", "D5", "J5", "L", "N30", "P", "R30",
            ]),
        ];
        // Known difference: the ms modes other than set treat a placeholder or stale item as missing
        // (memcached: as an item), so the lease cases only set.
        if leases {
            ms_pool.push(lit("I"));
        } else {
            // The modes, and now and then one memcached refuses: lower case (`invalid mode for ms M
            // token`), or not one character (`incorrect length for M token`).
            ms_pool.push(num_flag(
                "M",
                prop_oneof![
                    5 => prop_oneof![Just("E"), Just("A"), Just("P"), Just("R"), Just("S")],
                    1 => prop_oneof![Just("s"), Just("e"), Just("SS"), Just("")],
                ]
                .prop_map(str::to_string),
            ));
        }
        let ms = (key(), self.value(), meta_flags(ms_pool)).prop_map(|(k, v, mut fl)| {
            let appends = fl
                .iter()
                .any(|p| matches!(p, Piece::Text(t) if t == "MA" || t == "MP"));
            let k = if appends { appended_key(k) } else { k };
            // Known difference: an append or prepend with N creates a missing item (later memcached;
            // 1.6.18 ignores N in ms), so N only in the other modes, where both ignore it.
            if appends {
                fl.retain(|p| !matches!(p, Piece::Text(t) if t.starts_with('N')));
            }
            let mut line = vec![text("ms"), Piece::Key(k), text(v.len().to_string())];
            line.extend(fl);
            Req {
                line,
                data: block(&v),
            }
        });

        let mut md_pool = vec![lit("q"), lit("k"), opaque(true), (self.cas_flag)()];
        // md ignores T without I.
        let md_foreign = [
            "c", "f", "h", "l", "s", "t", "u", "v", "D5", "F5", "J5", "L", "MZ", "N30", "P", "R30",
            "T30",
        ];
        if leases {
            md_pool.push(lit("I"));
            md_pool.push(num_flag(
                "T",
                // -1: already past, which ends the item at once (`tcp.rs`'s stale-serving test).
                prop_oneof![Just("0"), Just("30"), Just("-1")].prop_map(str::to_string),
            ));
            md_pool.push(foreign(&md_foreign[..md_foreign.len() - 1]));
        } else {
            md_pool.push(foreign(&md_foreign));
        }
        let md = (key(), meta_flags(md_pool)).prop_map(|(k, fl)| meta_line("md", k, fl));

        let ma_pool = vec![
            lit("v"),
            lit("c"),
            lit("t"),
            lit("k"),
            lit("q"),
            opaque(false),
            (self.cas_flag)(),
            num_flag("N", self.exptime()),
            num_flag("J", self.delta()),
            num_flag("D", self.delta()),
            // No T: memcached 1.6.18 drops it when the result is longer than the old value (a new item
            // replaces the old, the TTL goes to the old one), a known difference.
            // Now and then a mode memcached refuses (`invalid mode for ma M token`; lower case too), or
            // an M that is not one character (`invalid or duplicate flag`).
            num_flag(
                "M",
                prop_oneof![
                    4 => prop_oneof![Just("I"), Just("+"), Just("D"), Just("-")],
                    1 => prop_oneof![Just("i"), Just("d"), Just("Z"), Just(""), Just("II")],
                ]
                .prop_map(str::to_string),
            ),
            foreign(&["f", "h", "l", "s", "u", "F5", "I", "L", "P", "R30"]),
        ];
        let ma = (counter_key(), meta_flags(ma_pool)).prop_map(|(k, mut fl)| {
            // As for mg: memcached's t depends on the flag order and wraps for an item expired at once. And
            // on creation memcached takes the TTL of the later of N and T; cache-node T's. So N, T, then
            // the rest.
            fl.sort_by_key(|p| match p {
                Piece::Text(t) if t.starts_with('N') => 0,
                Piece::Text(t) if t.starts_with('T') => 1,
                _ => 2,
            });
            if fl
                .iter()
                .any(|p| matches!(p, Piece::Text(t) if expires_now(t)))
            {
                fl.retain(|p| !matches!(p, Piece::Text(t) if t == "t"));
            }
            // Known difference: memcached 1.6.18 answers `HD` to `ma q N` when it creates the item.
            if fl
                .iter()
                .any(|p| matches!(p, Piece::Text(t) if t.starts_with('N')))
            {
                fl.retain(|p| !matches!(p, Piece::Text(t) if t == "q"));
            }
            meta_line("ma", k, fl)
        });

        // With leases no ma: it treats a placeholder or stale item as missing (NF; memcached: the empty
        // placeholder is a non-numeric value), a known difference.
        let ma_weight = if leases { 0 } else { 2 };
        let keyed = prop_oneof![
            4 => mg,
            4 => ms,
            2 => md,
            ma_weight => ma,
        ];
        // Meta commands name the last key in base64 with `b`. Known difference: memcached's `k` returns a
        // key as it was stored (base64 and `b` if stored with `b`, else plain, and an `mg N` placeholder
        // plain); cache-node returns it as sent. So one key is always base64, and never vivified by mg.
        let keyed = keyed.prop_map(|mut req| {
            if matches!(req.line[1], Piece::Key(k) if k == KEYS - 1) {
                req.line[1] = Piece::Base64Key(KEYS - 1);
                req.line
                    .retain(|p| !matches!(p, Piece::Text(t) if t.starts_with('N')));
                req.line.push(text("b"));
            }
            req
        });
        prop_oneof![
            self.keyed_meta_weight => keyed,
            1 => Just(Req { line: vec![text("mn")], data: None }),
        ]
        .boxed()
    }
}

/// A request of literal words, `KEY` standing for key 0, and a raw data block.
pub fn raw(line: &[&str], data: Option<&[u8]>) -> Req {
    Req {
        line: line
            .iter()
            .map(|t| if *t == "KEY" { Piece::Key(0) } else { text(*t) })
            .collect(),
        data: data.map(|d| Data::Raw(d.to_vec())),
    }
}

/// Malformed requests both servers answer the same way, that both tests send, each whole (a data block
/// that is swallowed is sent with it). Each test adds its own and picks one of all (`malformed_request`).
pub fn malformed_requests() -> Vec<Req> {
    vec![
        // The byte count does not parse: the block is read as a command.
        raw(&["set", "KEY", "0", "0", "abc"], Some(b"hello\r\n")),
        raw(&["set", "KEY", "0", "0"], None),
        // Bad data chunks: `bytes + 2` consumed, the rest read as commands.
        raw(&["set", "KEY", "0", "0", "2"], Some(b"abcd\r\n")),
        raw(&["set", "KEY", "0", "0", "2", "noreply"], Some(b"abcd\r\n")),
        raw(&["cas", "KEY", "0", "0", "1"], Some(b"x\r\n")),
        raw(&["incr", "KEY"], None),
        raw(&["incr", "KEY", "abc"], None),
        // memcached sends no CLIENT_ERROR for a line that ends in noreply, but still ERROR for a wrong
        // token count.
        raw(&["incr", "KEY", "abc", "noreply"], None),
        raw(&["decr", "KEY", "-1", "noreply"], None),
        raw(&["touch", "KEY", "abc", "noreply"], None),
        raw(&["delete", "KEY", "5", "noreply"], None),
        raw(&["delete", "KEY", "0", "0"], None),
        raw(&["get"], None),
        raw(&["bogus", "KEY"], None),
        raw(&["mg"], None),
        raw(&["ms", "KEY"], None),
        raw(&["ms", "KEY", "abc"], None),
        raw(&["mg", "KEY", "v", "v"], None),
        raw(&["md", "KEY", "q", "q"], None),
        // A flag error swallows the data block.
        raw(&["ms", "KEY", "1", "!"], Some(b"a\r\n")),
        raw(&["mg", "KEY", "Tabc"], None),
        raw(&["verbosity", "x", "noreply"], None),
        raw(&["set", "KEY", "0", "0", "1", "extra"], Some(b"7\r\n")),
        raw(&["gats", "x", "KEY"], None),
        raw(&[""], None),
        Req {
            line: vec![text("get"), Piece::LongKey],
            data: None,
        },
        // memcached 1.6.18 parses the flags of every meta command alike (protocol::parse_meta_flags):
        // a token that does not parse is answered with its own line, the last one's; an unknown or
        // repeated flag (or a first byte over 126) at once; md and ma answer all with one line.
        raw(&["mg", "KEY", "Fabc"], None),
        raw(&["mg", "KEY", "Dabc"], None),
        raw(&["mg", "KEY", "Jabc"], None),
        raw(&["mg", "KEY", "M"], None),
        raw(&["mg", "KEY", "MII"], None),
        raw(&["mg", "KEY", "Tabc", "Dabc"], None),
        raw(&["mg", "KEY", "Dabc", "Tabc"], None),
        raw(&["mg", "KEY", "Fabc", "Jabc"], None),
        raw(&["mg", "KEY", "Tabc", "!"], None),
        raw(&["mg", "KEY", "Tabc", "v", "v"], None),
        raw(&["mg", "KEY", "\u{80}"], None),
        raw(&["md", "KEY", "Cabc"], None),
        raw(&["md", "KEY", "Tabc", "I"], None),
        raw(&["md", "KEY", "MII"], None),
        raw(&["ma", "KEY", "Dabc"], None),
        raw(&["ma", "KEY", "Jabc"], None),
        raw(&["ma", "KEY", "Cabc"], None),
        raw(&["ma", "KEY", "M"], None),
        raw(&["ma", "KEY", "MZ"], None),
        raw(&["ma", "KEY", "Mi"], None),
        // ms: the same, its data block swallowed. `S` (the size, in early meta drafts) is no flag.
        raw(&["ms", "KEY", "1", "S1"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "S"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "Fabc"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "F-1"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "Tabc", "Fabc"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "M"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "MSS"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "Ms"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "Tabc", "MSS"], Some(b"a\r\n")),
        // 17 flags are the most memcached takes on mg, md and ma (protocol::MAX_META_TOKENS); 18 are
        // refused. (Not on ms, whose data block memcached then reads as a command: SERVER.md.)
        raw(
            &[
                "mg", "KEY", "c", "f", "k", "q", "t", "u", "v", "C5", "D5", "F5", "I", "J5", "L",
                "MZ", "O1", "P", "R5",
            ],
            None,
        ),
        raw(
            &[
                "mg", "KEY", "c", "f", "k", "q", "t", "u", "v", "C5", "D5", "F5", "I", "J5", "L",
                "MZ", "O1", "P", "R5", "s",
            ],
            None,
        ),
        raw(
            &[
                "md", "KEY", "c", "f", "h", "k", "l", "q", "s", "t", "u", "v", "D5", "F5", "J5",
                "L", "MZ", "N30", "P", "R30",
            ],
            None,
        ),
        raw(
            &[
                "ma", "KEY", "f", "h", "k", "l", "q", "s", "t", "u", "v", "F5", "I", "L", "P",
                "R5", "O1", "c", "C5", "T30",
            ],
            None,
        ),
        // Base64 keys (`b`) as memcached decodes them (protocol::base64_decode): bytes outside the
        // alphabet skipped (`YWJj!` is `abc`), an incomplete group refused (`CLIENT_ERROR error decoding
        // key`; md and ma: their one line). And bounded as sent, before decoding: 252 characters are
        // refused (`CLIENT_ERROR bad command line format`), 248 taken.
        raw(&["mg", "YWJj!", "b", "v"], None),
        raw(&["mg", "ab!", "b"], None),
        raw(&["mg", "Zm9v=", "b", "v"], None),
        raw(&["mg", "====", "b"], None),
        raw(&["mg", "ab!", "Tabc", "b"], None),
        raw(&["md", "ab!", "b"], None),
        raw(&["ma", "ab!", "b"], None),
        raw(&["ms", "ab!", "1", "b"], Some(b"a\r\n")),
        Req {
            line: vec![text("mg"), Piece::LongBase64Key(189), text("b"), text("v")],
            data: None,
        },
        Req {
            line: vec![text("md"), Piece::LongBase64Key(189), text("b")],
            data: None,
        },
        Req {
            line: vec![text("ms"), Piece::LongBase64Key(186), text("1"), text("b")],
            data: block(b"z"),
        },
        Req {
            line: vec![text("mg"), Piece::LongBase64Key(186), text("b"), text("v")],
            data: None,
        },
    ]
}

/// One of `malformed_requests` and `own`, all alike likely.
pub fn malformed_request(own: Vec<Req>) -> impl Strategy<Value = Req> {
    let mut all = malformed_requests();
    all.extend(own);
    prop::sample::select(all)
}

// ------------------------------------------------------------------------------------------------
// Normalising replies.

/// One server's CAS tokens in order of first appearance.
#[derive(Default)]
pub struct CasMap {
    tokens: Vec<u64>,
    index: HashMap<u64, usize>,
}

impl CasMap {
    pub fn placeholder(&mut self, token: u64) -> usize {
        *self.index.entry(token).or_insert_with(|| {
            self.tokens.push(token);
            self.tokens.len() - 1
        })
    }

    pub fn resolve(&self, cas: &Cas) -> u64 {
        match *cas {
            Cas::Seen(i) if !self.tokens.is_empty() => self.tokens[i % self.tokens.len()],
            // Nothing seen yet: a wrong value above every CAS either server hands out in a run. A
            // middling one (12345 before) is older than the item's CAS on one server and newer on the
            // other, and `ms ... I` stores an older CAS as stale but refuses a newer one (EX).
            Cas::Seen(_) => NEVER_ISSUED_CAS,
            Cas::Literal(v) => v,
        }
    }
}

/// A data block: as is if short, else its length and hash.
fn show_block(block: &[u8]) -> String {
    if block.len() <= 80 {
        return String::from_utf8_lossy(block).into_owned();
    }
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(block);
    let hash = hasher.finish();
    format!(
        "<{} bytes {:?}... hash {hash:016x}>",
        block.len(),
        String::from_utf8_lossy(&block[..16])
    )
}

/// Rewrites a reply into lines: CAS values to placeholders (`#n`, numbered by `cas`), TTLs to
/// `t-1`/`t+`, data blocks (indented) without memcached's padding of shorter incr/decr results, long
/// blocks summarised.
pub fn normalise(reply: &[u8], cas: &mut CasMap) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = reply;
    while !rest.is_empty() {
        let end = memchr::memmem::find(rest, b"\r\n").map_or(rest.len(), |p| p + 2);
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end..];
        let tokens: Vec<&str> = line.trim_end_matches("\r\n").split(' ').collect();
        let mut data_len = None;
        let mut normalised = Vec::with_capacity(tokens.len());
        match tokens[0] {
            "VALUE" => {
                data_len = tokens.get(3).and_then(|t| t.parse::<usize>().ok());
                for (i, t) in tokens.iter().enumerate() {
                    match t.parse::<u64>() {
                        Ok(c) if i == 4 => normalised.push(format!("#{}", cas.placeholder(c))),
                        _ => normalised.push(t.to_string()),
                    }
                }
            }
            "VA" | "HD" | "EN" | "NF" | "NS" | "EX" => {
                if tokens[0] == "VA" {
                    data_len = tokens.get(1).and_then(|t| t.parse::<usize>().ok());
                }
                for (i, t) in tokens.iter().enumerate() {
                    let flag = t.as_bytes().first().copied();
                    let num = t.get(1..).and_then(|n| n.parse::<i64>().ok());
                    match (i, flag, num) {
                        (1.., Some(b'c'), Some(c)) => {
                            normalised.push(format!("c#{}", cas.placeholder(c as u64)))
                        }
                        (1.., Some(b't'), Some(-1)) => normalised.push("t-1".to_string()),
                        (1.., Some(b't'), Some(_)) => normalised.push("t+".to_string()),
                        _ => normalised.push(t.to_string()),
                    }
                }
            }
            _ => normalised.extend(tokens.iter().map(|t| t.to_string())),
        }
        let mut data = None;
        if let Some(n) = data_len {
            let n = (n + 2).min(rest.len());
            let block = &rest[..n];
            rest = &rest[n..];
            let block = block.strip_suffix(b"\r\n").unwrap_or(block);
            // memcached writes an incr/decr result that got shorter in place, padded with spaces
            // (protocol.txt: "purely an implementation optimization ... you also shouldn't rely on
            // that"); generated values have no spaces, so compare short blocks without them.
            let unpadded: Vec<u8> = if block.len() <= 80 {
                block.iter().copied().filter(|&b| b != b' ').collect()
            } else {
                block.to_vec()
            };
            if unpadded.len() < block.len() {
                let len_token = if normalised[0] == "VALUE" { 3 } else { 1 };
                normalised[len_token] = unpadded.len().to_string();
            }
            data = Some(show_block(&unpadded));
        }
        out.push(normalised.join(" "));
        if let Some(d) = data {
            out.push(format!("  {d}"));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// The property-test loop.

/// How a differential test runs its cases.
pub struct Settings {
    /// The test's name, for the summary line.
    pub name: &'static str,
    /// What a case counts (`count`), for the summary line.
    pub counted: &'static str,
    /// The environment variable that sets the number of cases.
    pub cases_var: &'static str,
    pub default_cases: u32,
    /// The seed when `PROPTEST_RNG_SEED` sets none.
    pub default_seed: u64,
    pub max_shrink_iters: u32,
    pub max_shrink_time: u32,
}

/// Starts memcached and cache-node (CAS values from 1, as memcached's, so a literal CAS is older or newer
/// than an item's alike), runs the cases of `strategy` through `test(cache-node, memcached, case)`
/// (cache-node's `TestServer`, so a test can read its store between requests; memcached's address)
/// (`Err`: the report of a difference), and panics with the seed and the shrunk case's report if one
/// fails. `count` is what a case adds to the summary.
pub fn check<S: Strategy>(
    settings: &Settings,
    strategy: &S,
    count: impl Fn(&S::Value) -> usize,
    test: impl Fn(&TestServer, SocketAddr, S::Value) -> Result<(), String>,
) {
    let memcached = Memcached::start();
    let memcached_addr = SocketAddr::from(([127, 0, 0, 1], memcached.port));
    let runtime = runtime();
    let server = runtime.block_on(TestServer::start_with(|c| c.first_cas = 0));
    let mut config = Config {
        cases: std::env::var(settings.cases_var)
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(settings.default_cases),
        max_shrink_iters: settings.max_shrink_iters,
        max_shrink_time: settings.max_shrink_time,
        failure_persistence: None,
        ..Config::default()
    };
    if matches!(config.rng_seed, RngSeed::Random) {
        config.rng_seed = RngSeed::Fixed(settings.default_seed);
    }
    let seed = config.rng_seed;
    let started = Instant::now();
    let counted = AtomicUsize::new(0);
    let mut runner = TestRunner::new(config);
    let result = runner.run(strategy, |case| {
        counted.fetch_add(count(&case), Ordering::Relaxed);
        test(&server, memcached_addr, case).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => eprintln!(
            "{}: {} {} in {:.1?}, identical",
            settings.name,
            counted.load(Ordering::Relaxed),
            settings.counted,
            started.elapsed()
        ),
        Err(TestError::Fail(reason, _)) => {
            panic!("cache-node and memcached differ (seed {seed:?}; shrunk case):\n{reason}")
        }
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
    runtime.block_on(server.stop());
}

/// The runtime the tests run cache-node on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
