//! The memcached protocol as pure code over byte slices: parsing requests and responses, composing both.
//!
//! This module does no I/O and owns no state. It is shared by the cache node (which parses requests and
//! composes responses), and by the client and router in crate `regions` (which compose requests and parse
//! responses; the router does both sides).
//!
//! Covered: the text protocol (get, gets, gat, gats, set, add, replace, append, prepend, cas, delete, incr,
//! decr, touch, flush_all, stats, version, verbosity, lru_crawler metadump, quit), the meta protocol of memcached 1.6 (mg, ms, md,
//! ma, mn, me) and mcrouter's lease dialect (lease-get, lease-set).
//!
//! Parsing is check-then-parse in one pass: [`parse_request`] returns [`Parsed::Incomplete`] when the buffer
//! does not yet hold a whole request (a normal outcome, not an error; [`Parsed::IncompleteData`] when only a
//! storage request's data block is missing, with its size, so a server can hold memory for it before
//! buffering it, or refuse it), a borrowed [`Request`] and the number
//! of bytes it used, or a [`ProtocolError`] together with how much input to drop so the connection stays in
//! sync (for a refused `set` that includes its data block, which may not have arrived yet: see [`Swallow`]).
//! A get line longer than the line bound is the one request read in parts ([`Parsed::GetLinePart`]): the
//! caller carries a [`LongGetLine`] between them, and parses them with [`parse_long_get_rest`].
//! The limits in [`Limits`] (key length, value size, line length) are enforced here, so every user of the
//! parser gets them, and the property test in `tests/protocol_fuzz.rs` checks them over arbitrary bytes.
//!
//! Not covered: the binary protocol (deprecated by memcached) and UDP.

use std::fmt;

use bytes::{BufMut, BytesMut};

/// memcached's key length limit, in bytes.
pub const MAX_KEY_LEN: usize = 250;
/// memcached's default item size limit (`-I 1m`).
pub const DEFAULT_MAX_VALUE_LEN: usize = 1024 * 1024;
/// Longest request line (without its data block) accepted. memcached closes the connection on a non-get
/// line over 2048 bytes and reads get lines of any length into a buffer that grows; we accept every line
/// up to 16 KiB (room for 64 keys of 250 bytes) and answer a longer one with `CLIENT_ERROR line too long`,
/// dropping input through its newline, so the connection survives and memory stays bounded. A longer
/// `get`, `gets`, `gat` or `gats` line is answered in parts of at most this length
/// ([`Parsed::GetLinePart`]).
pub const DEFAULT_MAX_LINE_LEN: usize = 16 * 1024;
/// Longest opaque token accepted, its `O` included, as memcached 1.6.18 (`MFLAG_MAX_OPAQUE_LENGTH`):
/// `O` and 31 bytes.
pub const MAX_OPAQUE_LEN: usize = 32;
/// Most tokens a meta request line may have, the command, the key and `ms`'s length included: memcached
/// 1.6.18's `MFLAG_MAX_OPT_LENGTH` (20), which also counts its tokenizer's end marker. So at most 17 flags
/// on `mg`/`md`/`ma`, 16 on `ms`.
pub const MAX_META_TOKENS: usize = 19;
/// The meta flags memcached 1.6.18 knows (`_meta_flag_preparse`). One parser reads them for every meta
/// command, so each command takes all of them and ignores those it has no use for (`md k v` is a delete,
/// `mg k C5` a get); `P` and `L` are undocumented and do nothing. Any other flag is refused, except the
/// two cache-node takes from later memcached: `E` (every command) and `x` (md).
pub const META_FLAGS: &[u8] = b"bcfhklqstuvCDFIJLMNOPRT";
/// Relative expiry times above this many seconds are Unix timestamps (memcached's REALTIME_MAXDELTA).
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// Limits the parser enforces. Each is a parser option so that tests and `-I` can change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes, as sent (a meta `b` key before it is decoded, as memcached). memcached: 250.
    pub max_key_len: usize,
    /// Largest value (data block) accepted, in bytes; larger ones get `SERVER_ERROR object too large for cache`.
    pub max_value_len: usize,
    /// Longest request or response line, without the data block.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_len: MAX_KEY_LEN,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            max_line_len: DEFAULT_MAX_LINE_LEN,
        }
    }
}

/// What a malformed or refused request is answered with. Each maps to memcached's own error line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Unknown command, or a known one with the wrong number of arguments (memcached: `ERROR`).
    #[error("ERROR")]
    UnknownCommand,
    /// Arguments that do not parse, or an invalid key.
    #[error("CLIENT_ERROR bad command line format")]
    BadCommandLine,
    /// A key over the length limit or with control characters or spaces.
    #[error("CLIENT_ERROR bad command line format")]
    BadKey,
    /// The data block was not followed by `\r\n`.
    #[error("CLIENT_ERROR bad data chunk")]
    BadDataChunk,
    /// The value is larger than the item size limit.
    #[error("SERVER_ERROR object too large for cache")]
    TooLarge,
    /// No newline within [`Limits::max_line_len`].
    #[error("CLIENT_ERROR line too long")]
    LineTooLong,
    /// `incr`/`decr` with a delta that is not a 64-bit unsigned number.
    #[error("CLIENT_ERROR invalid numeric delta argument")]
    BadDelta,
    /// A meta flag memcached 1.6.18 does not know (see [`META_FLAGS`]), on `mg` or `ms`.
    #[error("CLIENT_ERROR invalid flag")]
    InvalidFlag,
    /// The same meta flag twice, or a flag whose first byte is 127 or above, on `mg` or `ms`.
    #[error("CLIENT_ERROR duplicate flag")]
    DuplicateFlag,
    /// Any flag error of `md`/`ma` (unknown, repeated, or a token that does not parse), which memcached
    /// 1.6.18 answers with this one line.
    #[error("CLIENT_ERROR invalid or duplicate flag")]
    InvalidOrDuplicateFlag,
    /// A meta flag's token that does not parse (`N`, `T`, `R`, `C`; e.g. `Tabc`).
    #[error("CLIENT_ERROR bad token in command line format")]
    BadToken,
    /// A `D` token that does not parse.
    #[error("CLIENT_ERROR invalid numeric delta value")]
    BadDeltaToken,
    /// A `J` token that does not parse.
    #[error("CLIENT_ERROR invalid numeric initial value")]
    BadInitialToken,
    /// An `M` token that is not one character.
    #[error("CLIENT_ERROR incorrect length for M token")]
    ModeLength,
    /// A meta key with `b` that does not decode.
    #[error("CLIENT_ERROR error decoding key")]
    KeyDecoding,
    /// An opaque token (`O` included) over [`MAX_OPAQUE_LEN`] bytes.
    #[error("CLIENT_ERROR opaque token too long")]
    OpaqueTooLong,
    /// An `M` flag of `ms` naming none of its modes.
    #[error("CLIENT_ERROR invalid mode for ms M token")]
    InvalidMode,
    /// An `M` flag of `ma` naming none of its modes.
    #[error("CLIENT_ERROR invalid mode for ma M token")]
    InvalidArithMode,
    /// More meta flags than [`MAX_META_TOKENS`] allows, on `ms`, `md` or `ma`.
    #[error("CLIENT_ERROR options flags too long")]
    FlagsTooLong,
    /// More meta flags than [`MAX_META_TOKENS`] allows, on `mg` (memcached words it differently).
    #[error("CLIENT_ERROR options flags are too long")]
    MgFlagsTooLong,
    /// `delete` with arguments other than `0` or `noreply`.
    #[error("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]")]
    DeleteUsage,
    /// `flush_all` with a delay that is not a number.
    #[error("CLIENT_ERROR invalid exptime argument")]
    BadExptime,
}

impl ProtocolError {
    /// The reply line for this error, with `\r\n`.
    pub fn reply(&self) -> &'static [u8] {
        match self {
            ProtocolError::UnknownCommand => b"ERROR\r\n",
            ProtocolError::BadCommandLine | ProtocolError::BadKey => {
                b"CLIENT_ERROR bad command line format\r\n"
            }
            ProtocolError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
            ProtocolError::TooLarge => b"SERVER_ERROR object too large for cache\r\n",
            ProtocolError::LineTooLong => b"CLIENT_ERROR line too long\r\n",
            ProtocolError::BadDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
            ProtocolError::InvalidFlag => b"CLIENT_ERROR invalid flag\r\n",
            ProtocolError::DuplicateFlag => b"CLIENT_ERROR duplicate flag\r\n",
            ProtocolError::InvalidOrDuplicateFlag => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            ProtocolError::BadToken => b"CLIENT_ERROR bad token in command line format\r\n",
            ProtocolError::BadDeltaToken => b"CLIENT_ERROR invalid numeric delta value\r\n",
            ProtocolError::BadInitialToken => b"CLIENT_ERROR invalid numeric initial value\r\n",
            ProtocolError::ModeLength => b"CLIENT_ERROR incorrect length for M token\r\n",
            ProtocolError::KeyDecoding => b"CLIENT_ERROR error decoding key\r\n",
            ProtocolError::OpaqueTooLong => b"CLIENT_ERROR opaque token too long\r\n",
            ProtocolError::InvalidMode => b"CLIENT_ERROR invalid mode for ms M token\r\n",
            ProtocolError::InvalidArithMode => b"CLIENT_ERROR invalid mode for ma M token\r\n",
            ProtocolError::FlagsTooLong => b"CLIENT_ERROR options flags too long\r\n",
            ProtocolError::MgFlagsTooLong => b"CLIENT_ERROR options flags are too long\r\n",
            ProtocolError::DeleteUsage => {
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            }
            ProtocolError::BadExptime => b"CLIENT_ERROR invalid exptime argument\r\n",
        }
    }
}

/// Input to drop after a refused request, beyond the bytes already counted in `consumed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swallow {
    /// Nothing more.
    Nothing,
    /// This many more bytes: the data block (and its `\r\n`) of a refused storage command, which may
    /// arrive later and in pieces.
    Bytes(usize),
    /// Everything through the next `\n`: the rest of an over-long line.
    ThroughNewline,
}

/// The outcome of [`parse_request`].
#[derive(Debug, PartialEq)]
pub enum Parsed<'a> {
    /// The buffer does not hold a whole request yet; read more and call again with the same bytes plus more.
    Incomplete,
    /// The line of a storage request is in, its data block not all yet: read more and call again, as for
    /// `Incomplete`. Tells the server how large the request will be (`line_len + data_len + 2`), so it can
    /// hold memory for a large value before buffering it, or refuse it: reply `SERVER_ERROR out of
    /// memory storing object` (unless `noreply`), drop `line_len` bytes and swallow `data_len + 2`.
    IncompleteData {
        /// The key named on the line, as sent (base64 for `ms ... b`).
        key: &'a [u8],
        /// Bytes of the line, through its `\n`.
        line_len: usize,
        /// Bytes of the data block, without its `\r\n`.
        data_len: usize,
        /// The client flags the line gives the value (0 if it gives none): with the key and
        /// `data_len`, what sizes the item, so the server can map its memory and read the block
        /// straight into it ([`parse_landed_request`] then parses the request).
        flags: u32,
        /// The line asked for no reply (text `noreply`; meta errors are always sent).
        noreply: bool,
        /// A `set` or an `ms` (any mode): its key as sent and whether that is base64, as
        /// `Error::unlinks`. When its value cannot be held, memcached removes the item it would have
        /// replaced, and so must the server.
        unlinks: Option<(&'a [u8], bool)>,
    },
    /// Part of a `get`, `gets`, `gat` or `gats` line longer than the line bound: the keys that end
    /// within its first `max_line_len` bytes. Answer them without the closing `END`, drop `consumed`
    /// bytes, and parse what follows with [`parse_long_get_rest`] and `line` until that returns the
    /// line's last part as a [`Request::Get`]. So a multi-get of any length is read in bounded
    /// memory; memcached reads such a line whole, into a buffer that grows without bound.
    GetLinePart {
        /// What the later parts of the line need from its start.
        line: LongGetLine,
        /// The keys of this part, at least one.
        keys: Keys<'a>,
        /// Bytes of the buffer the part used: through the space after its last key.
        consumed: usize,
    },
    /// A whole request, which used `consumed` bytes of the buffer.
    Request {
        /// The request, borrowing keys and data from the buffer.
        request: Request<'a>,
        /// Bytes of the buffer the request used (`consumed <= buf.len()`).
        consumed: usize,
    },
    /// A request that is refused: reply with `error.reply()`, drop `consumed` bytes, then drop per `swallow`.
    Error {
        /// What to answer.
        error: ProtocolError,
        /// Bytes of the buffer to drop now (`consumed <= buf.len()`).
        consumed: usize,
        /// What else to drop once it arrives.
        swallow: Swallow,
        /// The line ended in `noreply`: send no error line (see `parse_request`).
        noreply: bool,
        /// A `set` or an `ms` (any mode) refused as too large: its key as sent, and whether that is
        /// base64 (decode it with [`decode_key`]). memcached 1.6 removes the item stored under it
        /// ("avoid stale data persisting in cache because we failed alloc"), so a client whose new
        /// value was refused does not go on reading the old one; `add`, `replace`, `cas`, `append`,
        /// `prepend` and `lease-set` leave it, and every other error is `None`.
        unlinks: Option<(&'a [u8], bool)>,
    },
}

/// A `get`, `gets`, `gat` or `gats` line longer than the line bound that is being read in parts
/// ([`Parsed::GetLinePart`]): what its later parts, which hold only keys, are answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongGetLine {
    /// `gets`/`gats`: return CAS values.
    pub with_cas: bool,
    /// `gat`/`gats`: the new expiry, as sent.
    pub touch: Option<i64>,
}

/// A storage command of the text protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `set`: store unconditionally.
    Set,
    /// `add`: store only if the key is absent.
    Add,
    /// `replace`: store only if the key is present.
    Replace,
    /// `append`: add the data after the existing value.
    Append,
    /// `prepend`: add the data before the existing value.
    Prepend,
    /// `cas`: store only if the item's CAS equals the given one.
    Cas,
}

impl StoreMode {
    fn name(self) -> &'static str {
        match self {
            StoreMode::Set => "set",
            StoreMode::Add => "add",
            StoreMode::Replace => "replace",
            StoreMode::Append => "append",
            StoreMode::Prepend => "prepend",
            StoreMode::Cas => "cas",
        }
    }
}

/// The keys of a multi-key retrieval, kept as the raw space-separated slice so that parsing allocates nothing.
/// The parser has checked every key against the limits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a> {
    raw: &'a [u8],
}

impl<'a> Keys<'a> {
    /// Builds a key list from space-separated keys (for composing requests).
    pub fn from_raw(raw: &'a [u8]) -> Self {
        Keys { raw }
    }
    /// The keys in request order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.raw.split(|b| *b == b' ').filter(|k| !k.is_empty())
    }
    /// The raw space-separated bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

/// The arithmetic direction of `incr`/`decr` and `ma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// Add, wrapping at 2^64 as memcached.
    Incr,
    /// Subtract, stopping at 0 as memcached.
    Decr,
}

/// The meta commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCommand {
    /// `mg`: meta get.
    Get,
    /// `ms`: meta set (has a data block).
    Set,
    /// `md`: meta delete.
    Delete,
    /// `ma`: meta arithmetic.
    Arith,
    /// `me`: meta debug.
    Debug,
}

impl MetaCommand {
    fn name(self) -> &'static str {
        match self {
            MetaCommand::Get => "mg",
            MetaCommand::Set => "ms",
            MetaCommand::Delete => "md",
            MetaCommand::Arith => "ma",
            MetaCommand::Debug => "me",
        }
    }
}

/// The mode of `ms` (`M` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaSetMode {
    /// `MS` (default): set.
    Set,
    /// `ME`: add.
    Add,
    /// `MR`: replace.
    Replace,
    /// `MA`: append.
    Append,
    /// `MP`: prepend.
    Prepend,
}

/// The flags of a meta request, parsed. `raw` keeps them as sent, because the reply returns the
/// requested flags in request order.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaFlags<'a> {
    /// The flag tokens as sent (space separated), for composing replies in request order.
    pub raw: &'a [u8],
    /// `b`: the key is base64 encoded.
    pub base64_key: bool,
    /// `c`: return the CAS value.
    pub return_cas: bool,
    /// `f`: return the client flags.
    pub return_flags: bool,
    /// `h`: return whether the item was read before (0/1).
    pub return_hit: bool,
    /// `k`: return the key.
    pub return_key: bool,
    /// `l`: return the seconds since the last access.
    pub return_last_access: bool,
    /// `s`: return the value size.
    pub return_size: bool,
    /// `t`: return the remaining TTL (-1 for none).
    pub return_ttl: bool,
    /// `v`: return the value.
    pub return_value: bool,
    /// `q`: quiet, omit the success/miss line as memcached 1.6 does (EN for mg, HD for ms/md/ma).
    pub quiet: bool,
    /// `u`: do not bump the item in the eviction order.
    pub no_bump: bool,
    /// `I`: invalidate: md marks stale instead of removing; ms with an older C marks the stored item stale.
    pub invalidate: bool,
    /// `x`: md removes the value but keeps the item.
    pub remove_value: bool,
    /// `O`: opaque token echoed back.
    pub opaque: Option<&'a [u8]>,
    /// `C`: compare this CAS before changing.
    pub compare_cas: Option<u64>,
    /// `E`: use this as the new CAS value.
    pub new_cas: Option<u64>,
    /// `F`: client flags to set.
    pub client_flags: Option<u32>,
    /// `N`: mg/ma vivify on miss with this TTL; ms in append mode autovivifies.
    pub vivify_ttl: Option<i64>,
    /// `R`: mg wins the recache if the remaining TTL is below this.
    pub recache_ttl: Option<i64>,
    /// `T`: TTL to set (ms, ma on create, md with I) or to touch (mg).
    pub ttl: Option<i64>,
    /// `D`: ma delta (default 1).
    pub delta: Option<u64>,
    /// `J`: ma initial value on autovivify (default 0).
    pub initial: Option<u64>,
    /// `M` on ms: the storage mode.
    pub set_mode: Option<MetaSetMode>,
    /// `M` on ma: the arithmetic direction.
    pub arith_mode: Option<ArithOp>,
}

impl fmt::Debug for MetaFlags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetaFlags({:?})", String::from_utf8_lossy(self.raw))
    }
}

impl<'a> MetaFlags<'a> {
    /// The flag tokens in request order.
    pub fn tokens(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.raw.split(|b| *b == b' ').filter(|t| !t.is_empty())
    }
}

/// A parsed request. Keys and data borrow from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Request<'a> {
    /// `get`/`gets` (touch = None) and `gat`/`gats` (touch = Some(exptime)).
    Get {
        /// `gets`/`gats`: return CAS values.
        with_cas: bool,
        /// `gat`/`gats`: the new expiry.
        touch: Option<i64>,
        /// The keys: at least one, but the last part of a line read in parts
        /// ([`Parsed::GetLinePart`]) may have none.
        keys: Keys<'a>,
    },
    /// `set`, `add`, `replace`, `append`, `prepend`, `cas`.
    Store {
        /// Which storage command.
        mode: StoreMode,
        /// The key.
        key: &'a [u8],
        /// Opaque 32-bit client flags.
        flags: u32,
        /// Expiry as sent (see [`REALTIME_MAXDELTA`]).
        exptime: i64,
        /// The CAS unique for `cas`, else 0.
        cas_unique: u64,
        /// The data block, without `\r\n`.
        data: &'a [u8],
        /// `noreply`.
        noreply: bool,
    },
    /// `delete key [noreply]`.
    Delete {
        /// The key.
        key: &'a [u8],
        /// `noreply`.
        noreply: bool,
    },
    /// `incr`/`decr key delta [noreply]`.
    Arith {
        /// Direction.
        op: ArithOp,
        /// The key.
        key: &'a [u8],
        /// The amount.
        delta: u64,
        /// `noreply`.
        noreply: bool,
    },
    /// `touch key exptime [noreply]`.
    Touch {
        /// The key.
        key: &'a [u8],
        /// The new expiry.
        exptime: i64,
        /// `noreply`.
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`.
    FlushAll {
        /// Seconds from now (or a Unix time, as exptime) at which everything older is invalid; 0 = now.
        delay: i64,
        /// `noreply`.
        noreply: bool,
    },
    /// `stats [group [arg arg]]`.
    Stats {
        /// `settings`, `reset`, ... or None for general stats.
        group: Option<&'a [u8]>,
        /// The tokens after the group (`stats cachedump CLASS LIMIT`); later ones are ignored, as
        /// memcached ignores them.
        args: [Option<&'a [u8]>; 2],
    },
    /// `version`.
    Version,
    /// `verbosity level [noreply]` (accepted and ignored, as memcached without -v).
    Verbosity {
        /// `noreply`.
        noreply: bool,
    },
    /// `lru_crawler metadump all|hash|ID[,ID...]` (memcached 1.6): a line of metadata per item
    /// of those classes. memcached's other `lru_crawler` subcommands are not taken (`ERROR`).
    LruCrawlerMetadump {
        /// `all`, `hash` or a comma-separated list of class ids, as sent (checked on execution,
        /// as memcached answers a bad one `BADCLASS`).
        classes: &'a [u8],
    },
    /// `quit`: close the connection.
    Quit,
    /// mcrouter's `lease-get key`.
    LeaseGet {
        /// The key.
        key: &'a [u8],
    },
    /// mcrouter's `lease-set key token flags exptime bytes [noreply]`.
    LeaseSet {
        /// The key.
        key: &'a [u8],
        /// The lease token from `LVALUE`.
        token: u64,
        /// Client flags.
        flags: u32,
        /// Expiry as sent.
        exptime: i64,
        /// The data block.
        data: &'a [u8],
        /// `noreply`.
        noreply: bool,
    },
    /// `mg`, `ms`, `md`, `ma`, `me`.
    Meta {
        /// Which meta command.
        command: MetaCommand,
        /// The key as sent (base64 if `flags.base64_key`; see [`decode_key`]).
        key: &'a [u8],
        /// The flags.
        flags: MetaFlags<'a>,
        /// The data block of `ms`, else empty.
        data: &'a [u8],
    },
    /// `mn`: answered with `MN`, marks the end of a batch of quiet requests.
    MetaNoop,
}

/// Decodes a meta request's key into `out` if it is base64 (`b` flag), else returns it unchanged.
/// The parser has already checked that decoding succeeds (see [`base64_decode`]).
pub fn decode_key<'k>(
    key: &'k [u8],
    base64_key: bool,
    out: &'k mut [u8; MAX_KEY_LEN],
) -> Option<&'k [u8]> {
    if !base64_key {
        return Some(key);
    }
    let n = base64_decode(key, out)?;
    Some(&out[..n])
}

/// Whether a key is acceptable: 1..=max bytes, no control characters, no spaces.
pub fn valid_key(key: &[u8], max_key_len: usize) -> bool {
    !key.is_empty() && key.len() <= max_key_len && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

/// Decodes base64 into `out` as memcached 1.6.18 decodes a `b` key (`base64_decode`, after Jouni
/// Malinen's): bytes outside the alphabet are skipped, the rest (`=` included) must make whole groups of
/// four, and the first group with padding ends the key, so `YWJj!` is `abc`, and `YQ==YWJj` and `YR==`
/// are `a`. None where memcached fails: no group, a partial one, three or four `=` in a group, or more
/// than `out` holds. Returns the decoded length, at least 1.
fn base64_decode(src: &[u8], out: &mut [u8]) -> Option<usize> {
    fn sextet(b: u8) -> Option<u8> {
        match b {
            b'A'..=b'Z' => Some(b - b'A'),
            b'a'..=b'z' => Some(b - b'a' + 26),
            b'0'..=b'9' => Some(b - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            b'=' => Some(0),
            _ => None,
        }
    }
    let count = src.iter().filter(|&&b| sextet(b).is_some()).count();
    if count == 0 || count % 4 != 0 || count / 4 * 3 > out.len() {
        return None;
    }
    let (mut block, mut filled, mut pad, mut pos) = ([0u8; 4], 0, 0, 0);
    for &b in src {
        let Some(v) = sextet(b) else { continue };
        if b == b'=' {
            pad += 1;
        }
        block[filled] = v;
        filled += 1;
        if filled == 4 {
            out[pos] = (block[0] << 2) | (block[1] >> 4);
            out[pos + 1] = (block[1] << 4) | (block[2] >> 2);
            out[pos + 2] = (block[2] << 6) | block[3];
            pos += 3;
            filled = 0;
            if pad > 0 {
                if pad > 2 {
                    return None;
                }
                pos -= pad;
                break;
            }
        }
    }
    (pos > 0).then_some(pos)
}

/// Parses a decimal unsigned number (digits only, no sign), as memcached's safe_strtoull.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    // No bound on the digits: leading zeros are fine (memcached reads with strtoull), and overflow is
    // caught below.
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses a decimal signed number.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', rest)) => {
            let v = parse_u64(rest)?;
            if v > i64::MAX as u64 + 1 {
                None
            } else {
                Some((v as i64).wrapping_neg())
            }
        }
        _ => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Largest data block length taken at face value. As memcached (`vlen > INT_MAX - 2`), a larger count is a
/// malformed line rather than a too-large value, so the connection does not swallow gigabytes of input.
pub const MAX_DATA_LEN_FIELD: usize = i32::MAX as usize - 2;

fn parse_data_len(s: &[u8]) -> Option<usize> {
    parse_u64(s)
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| *l <= MAX_DATA_LEN_FIELD)
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// A tiny tokenizer over one line: tokens separated by one or more spaces.
struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    fn new(line: &'a [u8]) -> Self {
        Tokens { rest: line }
    }
    /// The remaining bytes with leading spaces removed.
    fn remainder(&self) -> &'a [u8] {
        let start = self
            .rest
            .iter()
            .position(|b| *b != b' ')
            .unwrap_or(self.rest.len());
        &self.rest[start..]
    }

    /// The optional token that ends a line (incr/decr, touch, verbosity, storage commands), as memcached
    /// 1.6: `Some(noreply)` when nothing or one token is left, where only `noreply` means noreply (`incr k 1
    /// extra` is an incr); `None` (ERROR) when more follow.
    fn trailing_noreply(&mut self) -> Option<bool> {
        let noreply = self.next() == Some(b"noreply");
        self.next().is_none().then_some(noreply)
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|b| *b != b' ')?;
        let rest = &self.rest[start..];
        let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// The outcome for a storage request whose data block has not all arrived (from [`take_data`]'s
/// `Incomplete`); any other outcome passes through.
fn awaiting_data<'a>(
    outcome: Parsed<'static>,
    key: &'a [u8],
    line_len: usize,
    data_len: usize,
    flags: u32,
    noreply: bool,
    unlinks: Option<(&'a [u8], bool)>,
) -> Parsed<'a> {
    match outcome {
        Parsed::Incomplete => Parsed::IncompleteData {
            key,
            line_len,
            data_len,
            flags,
            noreply,
            unlinks,
        },
        other => other,
    }
}

fn err(error: ProtocolError, consumed: usize) -> Parsed<'static> {
    Parsed::Error {
        error,
        consumed,
        swallow: Swallow::Nothing,
        noreply: false,
        unlinks: None,
    }
}

fn err_swallow(error: ProtocolError, consumed: usize, data_len: usize) -> Parsed<'static> {
    Parsed::Error {
        error,
        consumed,
        swallow: Swallow::Bytes(data_len.saturating_add(2)),
        noreply: false,
        unlinks: None,
    }
}

/// [`ProtocolError::TooLarge`] for a request whose line and data block are `line_len` and `data_len`
/// bytes, removing `unlinks` (see [`Parsed::Error`]).
fn too_large(line_len: usize, data_len: usize, unlinks: Option<(&[u8], bool)>) -> Parsed<'_> {
    Parsed::Error {
        error: ProtocolError::TooLarge,
        consumed: line_len,
        swallow: Swallow::Bytes(data_len.saturating_add(2)),
        noreply: false,
        unlinks,
    }
}

// The Err side carries a whole `Parsed` so callers can return it as is; it is never boxed on a hot path.
#[allow(clippy::result_large_err)]
/// Finds the end of the first line. Returns (line without `\r\n`, bytes through `\n`), or the
/// incomplete / too-long outcome.
fn split_line(buf: &[u8], max_line_len: usize) -> Result<(&[u8], usize), Parsed<'static>> {
    // Search one byte past the limit plus "\r\n" so a line of exactly max_line_len is accepted.
    let window = &buf[..buf.len().min(max_line_len.saturating_add(2))];
    match memchr::memchr(b'\n', window) {
        Some(nl) => {
            let line = &buf[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max_line_len {
                return Err(err(ProtocolError::LineTooLong, nl + 1));
            }
            Ok((line, nl + 1))
        }
        // No newline: the line is surely too long once max_line_len + 1 bytes are in and the last is not
        // the '\r' of a line of exactly max_line_len bytes.
        None if window.len() > max_line_len + 1
            || (window.len() == max_line_len + 1 && window[max_line_len] != b'\r') =>
        {
            // Its end may already be in `buf`, with requests after it: only the line goes. (Taking
            // all of `buf` and then swallowing through the next newline threw those requests away,
            // and the next line too, so that a data block after it ran as a command.)
            match memchr::memchr(b'\n', &buf[window.len()..]) {
                Some(at) => Err(err(ProtocolError::LineTooLong, window.len() + at + 1)),
                None => Err(Parsed::Error {
                    error: ProtocolError::LineTooLong,
                    consumed: buf.len(),
                    swallow: Swallow::ThroughNewline,
                    noreply: false,
                    unlinks: None,
                }),
            }
        }
        None => Err(Parsed::Incomplete),
    }
}

#[allow(clippy::result_large_err)]
/// Takes a data block of `len` bytes plus `\r\n` starting at `start`. `Err` holds the outcome to return.
fn take_data(buf: &[u8], start: usize, len: usize) -> Result<(&[u8], usize), Parsed<'static>> {
    let end = start + len;
    if buf.len() < end + 2 {
        return Err(Parsed::Incomplete);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(err(ProtocolError::BadDataChunk, end + 2));
    }
    Ok((&buf[start..end], end + 2))
}

#[allow(clippy::result_large_err)]
/// A storage request's data block (`len` bytes from `start`) and the bytes the block and its `\r\n`
/// take in `buf`: from `buf`, or, when `landed` holds it (read elsewhere, [`parse_landed_request`]),
/// from there, with only the `\r\n` in `buf`; incomplete while `landed` is shorter than the block.
fn take_block<'a>(
    buf: &'a [u8],
    landed: Option<&'a [u8]>,
    start: usize,
    len: usize,
) -> Result<(&'a [u8], usize), Parsed<'static>> {
    let Some(data) = landed else {
        return take_data(buf, start, len);
    };
    if data.len() < len {
        // Still arriving.
        return Err(Parsed::Incomplete);
    }
    if data.len() > len {
        // Not this request's block: the caller's mistake, answered as a malformed block.
        return Err(err(ProtocolError::BadDataChunk, start));
    }
    take_data(buf, start, 0).map(|(_, consumed)| (data, consumed))
}

/// Parses one request from the start of `buf`.
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> Parsed<'a> {
    parse_request_with(buf, None, limits)
}

/// Parses the storage request whose line starts `buf` and whose data block, `data`, was read
/// elsewhere (into the item's own memory, after [`Parsed::IncompleteData`] for the same line): `buf`
/// holds the line and then the block's `\r\n`, and `consumed` counts only those bytes. The outcome
/// is what [`parse_request`] gives for the line, the block and the `\r\n` in one buffer
/// ([`Parsed::IncompleteData`] while `data` is not all of the block yet).
pub fn parse_landed_request<'a>(buf: &'a [u8], data: &'a [u8], limits: &Limits) -> Parsed<'a> {
    parse_request_with(buf, Some(data), limits)
}

fn parse_request_with<'a>(buf: &'a [u8], landed: Option<&'a [u8]>, limits: &Limits) -> Parsed<'a> {
    let (line, line_len) = match split_line(buf, limits.max_line_len) {
        Ok(v) => v,
        Err(
            outcome @ Parsed::Error {
                error: ProtocolError::LineTooLong,
                ..
            },
        ) => return long_get_first_part(buf, limits).unwrap_or(outcome),
        Err(outcome) => return outcome,
    };
    let mut tokens = Tokens::new(line);
    let Some(command) = tokens.next() else {
        return err(ProtocolError::UnknownCommand, line_len);
    };
    match parse_command(buf, landed, command, tokens, line_len, limits) {
        // memcached (`set_noreply_maybe`) marks a text command whose last token is `noreply` before it checks
        // the arguments, and then sends none of its CLIENT_ERROR/SERVER_ERROR lines: a noreply client
        // reads no reply, and would take that line for the answer to its next request. Only the ERROR
        // of an unknown command or a wrong token count is still sent.
        Parsed::Error {
            error,
            consumed,
            swallow,
            noreply: false,
            unlinks,
        } if error != ProtocolError::UnknownCommand
            && TEXT_NOREPLY_COMMANDS.contains(&command)
            && Tokens::new(line).last() == Some(&b"noreply"[..]) =>
        {
            Parsed::Error {
                error,
                consumed,
                swallow,
                noreply: true,
                unlinks,
            }
        }
        outcome => outcome,
    }
}

/// The first part of a line over the line bound (`buf` holds more than `max_line_len` bytes of it) if
/// it is a `get`, `gets`, `gat` or `gats`; `None` for any other line, which is refused as too long.
fn long_get_first_part<'a>(buf: &'a [u8], limits: &Limits) -> Option<Parsed<'a>> {
    let window = &buf[..limits.max_line_len];
    let mut tokens = Tokens::new(window);
    let command = tokens.next()?;
    let touch = match command {
        b"get" | b"gets" => None,
        b"gat" | b"gats" => Some(parse_i64(tokens.next()?)?),
        _ => return None,
    };
    // The command (and exptime) must be whole: followed by a space within the window.
    if tokens.rest.is_empty() {
        return None;
    }
    let line = LongGetLine {
        with_cas: matches!(command, b"gets" | b"gats"),
        touch,
    };
    long_get_part(window, window.len() - tokens.rest.len(), line, limits)
}

/// Parses what follows a part of a long get line ([`Parsed::GetLinePart`]): its next part, or its
/// last one, through the newline, as a [`Request::Get`].
pub fn parse_long_get_rest<'a>(buf: &'a [u8], line: LongGetLine, limits: &Limits) -> Parsed<'a> {
    match split_line(buf, limits.max_line_len) {
        Ok((keys, consumed)) => {
            if Tokens::new(keys).any(|key| !valid_key(key, limits.max_key_len)) {
                return err(ProtocolError::BadKey, consumed);
            }
            Parsed::Request {
                request: Request::Get {
                    with_cas: line.with_cas,
                    touch: line.touch,
                    keys: Keys { raw: keys },
                },
                consumed,
            }
        }
        Err(
            outcome @ Parsed::Error {
                error: ProtocolError::LineTooLong,
                ..
            },
        ) => long_get_part(&buf[..limits.max_line_len], 0, line, limits).unwrap_or(outcome),
        Err(outcome) => outcome,
    }
}

/// The part of a long get line in `window` (its next `max_line_len` bytes, with no newline among
/// them), whose keys start at `keys_start`: the keys followed by a space. A bad one refuses the
/// rest of the line, as memcached refuses a get line with a bad key. `None` if there is no key
/// before the window's last space: a line of spaces or a key longer than a line, refused as a line
/// too long.
fn long_get_part<'a>(
    window: &'a [u8],
    keys_start: usize,
    line: LongGetLine,
    limits: &Limits,
) -> Option<Parsed<'a>> {
    let consumed = keys_start + memchr::memrchr(b' ', &window[keys_start..])? + 1;
    let keys = &window[keys_start..consumed];
    let mut count = 0;
    for key in Tokens::new(keys) {
        if !valid_key(key, limits.max_key_len) {
            return Some(Parsed::Error {
                error: ProtocolError::BadKey,
                consumed: window.len(),
                swallow: Swallow::ThroughNewline,
                noreply: false,
                unlinks: None,
            });
        }
        count += 1;
    }
    (count > 0).then_some(Parsed::GetLinePart {
        line,
        keys: Keys { raw: keys },
        consumed,
    })
}

/// The text commands that take a trailing `noreply`.
const TEXT_NOREPLY_COMMANDS: [&[u8]; 12] = [
    b"set",
    b"add",
    b"replace",
    b"append",
    b"prepend",
    b"cas",
    b"delete",
    b"incr",
    b"decr",
    b"touch",
    b"flush_all",
    b"verbosity",
];

/// Parses the request whose line starts with `command`; `tokens` holds the rest of the line.
fn parse_command<'a>(
    buf: &'a [u8],
    landed: Option<&'a [u8]>,
    command: &'a [u8],
    mut tokens: Tokens<'a>,
    line_len: usize,
    limits: &Limits,
) -> Parsed<'a> {
    match command {
        b"get" | b"gets" => {
            let keys = tokens.remainder();
            parse_keys(keys, limits, line_len).unwrap_or_else(|| Parsed::Request {
                request: Request::Get {
                    with_cas: command == b"gets",
                    touch: None,
                    keys: Keys { raw: keys },
                },
                consumed: line_len,
            })
        }
        b"gat" | b"gats" => {
            let Some(exptime) = tokens.next() else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            let Some(exptime) = parse_i64(exptime) else {
                return err(ProtocolError::BadExptime, line_len);
            };
            let keys = tokens.remainder();
            parse_keys(keys, limits, line_len).unwrap_or_else(|| Parsed::Request {
                request: Request::Get {
                    with_cas: command == b"gats",
                    touch: Some(exptime),
                    keys: Keys { raw: keys },
                },
                consumed: line_len,
            })
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let mode = match command {
                b"set" => StoreMode::Set,
                b"add" => StoreMode::Add,
                b"replace" => StoreMode::Replace,
                b"append" => StoreMode::Append,
                b"prepend" => StoreMode::Prepend,
                _ => StoreMode::Cas,
            };
            parse_store(buf, landed, mode, tokens, line_len, limits)
        }
        b"lease-set" => parse_lease_set(buf, landed, tokens, line_len, limits),
        b"delete" => {
            let (Some(key), rest) = (tokens.next(), tokens.remainder()) else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            if !valid_key(key, limits.max_key_len) {
                return err(ProtocolError::BadKey, line_len);
            }
            // As memcached: `delete key`, `delete key 0` (a legacy hold time of zero), `delete key noreply`
            // and `delete key 0 noreply`; anything else with up to two arguments gets the usage line, more
            // is an unknown command.
            let mut args = Tokens::new(rest);
            let noreply = match (args.next(), args.next(), args.next()) {
                (None, _, _) | (Some(b"0"), None, _) => false,
                (Some(b"noreply"), None, _) | (Some(b"0"), Some(b"noreply"), None) => true,
                (_, _, None) => return err(ProtocolError::DeleteUsage, line_len),
                _ => return err(ProtocolError::UnknownCommand, line_len),
            };
            Parsed::Request {
                request: Request::Delete { key, noreply },
                consumed: line_len,
            }
        }
        b"incr" | b"decr" => {
            let (Some(key), Some(delta)) = (tokens.next(), tokens.next()) else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            let Some(noreply) = tokens.trailing_noreply() else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            if !valid_key(key, limits.max_key_len) {
                return err(ProtocolError::BadKey, line_len);
            }
            let Some(delta) = parse_u64(delta) else {
                return err(ProtocolError::BadDelta, line_len);
            };
            let op = if command == b"incr" {
                ArithOp::Incr
            } else {
                ArithOp::Decr
            };
            Parsed::Request {
                request: Request::Arith {
                    op,
                    key,
                    delta,
                    noreply,
                },
                consumed: line_len,
            }
        }
        b"touch" => {
            let (Some(key), Some(exptime)) = (tokens.next(), tokens.next()) else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            let Some(noreply) = tokens.trailing_noreply() else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            if !valid_key(key, limits.max_key_len) {
                return err(ProtocolError::BadKey, line_len);
            }
            let Some(exptime) = parse_i64(exptime) else {
                return err(ProtocolError::BadExptime, line_len);
            };
            Parsed::Request {
                request: Request::Touch {
                    key,
                    exptime,
                    noreply,
                },
                consumed: line_len,
            }
        }
        b"flush_all" => {
            // As memcached 1.6 (process_flush_all_command): up to two arguments; `noreply` only as
            // the last; the delay is the first argument unless that is the `noreply`, and a second
            // argument that is not `noreply` is ignored (`flush_all 1 2` flushes in 1 s).
            let (first, second) = (tokens.next(), tokens.next());
            if tokens.next().is_some() {
                return err(ProtocolError::UnknownCommand, line_len);
            }
            let noreply = second.or(first) == Some(&b"noreply"[..]);
            let delay = match first {
                None => 0,
                Some(b"noreply") if second.is_none() => 0,
                Some(t) => match parse_i64(t) {
                    Some(d) => d,
                    None => return err(ProtocolError::BadExptime, line_len),
                },
            };
            Parsed::Request {
                request: Request::FlushAll { delay, noreply },
                consumed: line_len,
            }
        }
        b"stats" => {
            let group = tokens.next();
            let args = [tokens.next(), tokens.next()];
            Parsed::Request {
                request: Request::Stats { group, args },
                consumed: line_len,
            }
        }
        b"version" => Parsed::Request {
            request: Request::Version,
            consumed: line_len,
        },
        b"verbosity" => {
            let Some(level) = tokens.next() else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            if parse_u32(level).is_none() {
                return err(ProtocolError::BadCommandLine, line_len);
            }
            let Some(noreply) = tokens.trailing_noreply() else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            Parsed::Request {
                request: Request::Verbosity { noreply },
                consumed: line_len,
            }
        }
        b"lru_crawler" => match (tokens.next(), tokens.next(), tokens.next()) {
            (Some(b"metadump"), Some(classes), None) => Parsed::Request {
                request: Request::LruCrawlerMetadump { classes },
                consumed: line_len,
            },
            // As memcached 1.6.18: a missing or extra token, or an unknown subcommand.
            _ => err(ProtocolError::UnknownCommand, line_len),
        },
        b"quit" => Parsed::Request {
            request: Request::Quit,
            consumed: line_len,
        },
        b"mn" => Parsed::Request {
            request: Request::MetaNoop,
            consumed: line_len,
        },
        b"lease-get" => {
            let Some(key) = tokens.next() else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            if tokens.next().is_some() {
                return err(ProtocolError::UnknownCommand, line_len);
            }
            if !valid_key(key, limits.max_key_len) {
                return err(ProtocolError::BadKey, line_len);
            }
            Parsed::Request {
                request: Request::LeaseGet { key },
                consumed: line_len,
            }
        }
        b"mg" | b"md" | b"ma" | b"me" => {
            let command = match command {
                b"mg" => MetaCommand::Get,
                b"md" => MetaCommand::Delete,
                b"ma" => MetaCommand::Arith,
                _ => MetaCommand::Debug,
            };
            let Some(key) = tokens.next() else {
                // memcached 1.6 answers a keyless mg/md/ma as an unknown command, a keyless me as a bad line.
                let error = if command == MetaCommand::Debug {
                    ProtocolError::BadCommandLine
                } else {
                    ProtocolError::UnknownCommand
                };
                return err(error, line_len);
            };
            let raw = tokens.remainder();
            let flags = match meta_line_checks(command, key, raw, limits)
                .and_then(|()| parse_meta_flags(command, key, raw, limits))
            {
                Ok(f) => f,
                Err(e) => return err(e, line_len),
            };
            Parsed::Request {
                request: Request::Meta {
                    command,
                    key,
                    flags,
                    data: &[],
                },
                consumed: line_len,
            }
        }
        b"ms" => {
            // As memcached 1.6: no key is an unknown command, a key without a length a bad line.
            let Some(key) = tokens.next() else {
                return err(ProtocolError::UnknownCommand, line_len);
            };
            let Some(len) = tokens.next() else {
                return err(ProtocolError::BadCommandLine, line_len);
            };
            let len = parse_data_len(len);
            let raw = tokens.remainder();
            // As memcached 1.6.18 (process_mset_command): the key's length and the number of flags, then
            // the length, then the flags and the key, the size last (a too-large value is refused when its
            // item cannot be allocated). memcached swallows the data block from the flags on; cache-node
            // whenever the length parses, so the block is never read as a command.
            if let Err(e) = meta_line_checks(MetaCommand::Set, key, raw, limits) {
                return match len {
                    Some(len) => err_swallow(e, line_len, len),
                    None => err(e, line_len),
                };
            }
            let Some(len) = len else {
                return err(ProtocolError::BadCommandLine, line_len);
            };
            let flags = match parse_meta_flags(MetaCommand::Set, key, raw, limits) {
                Ok(f) => f,
                Err(e) => return err_swallow(e, line_len, len),
            };
            if len > limits.max_value_len {
                return too_large(line_len, len, Some((key, flags.base64_key)));
            }
            match take_block(buf, landed, line_len, len) {
                Ok((data, consumed)) => Parsed::Request {
                    request: Request::Meta {
                        command: MetaCommand::Set,
                        key,
                        flags,
                        data,
                    },
                    consumed,
                },
                Err(outcome) => awaiting_data(
                    outcome,
                    key,
                    line_len,
                    len,
                    flags.client_flags.unwrap_or(0),
                    false,
                    Some((key, flags.base64_key)),
                ),
            }
        }
        _ => err(ProtocolError::UnknownCommand, line_len),
    }
}

/// Checks every key of a retrieval; `Some(error)` if one is bad or there is none.
fn parse_keys(keys: &[u8], limits: &Limits, line_len: usize) -> Option<Parsed<'static>> {
    let mut count = 0;
    for key in Tokens::new(keys) {
        if !valid_key(key, limits.max_key_len) {
            return Some(err(ProtocolError::BadKey, line_len));
        }
        count += 1;
    }
    if count == 0 {
        return Some(err(ProtocolError::UnknownCommand, line_len));
    }
    None
}

fn parse_store<'a>(
    buf: &'a [u8],
    landed: Option<&'a [u8]>,
    mode: StoreMode,
    mut tokens: Tokens<'a>,
    line_len: usize,
    limits: &Limits,
) -> Parsed<'a> {
    let (Some(key), Some(flags), Some(exptime), Some(bytes)) =
        (tokens.next(), tokens.next(), tokens.next(), tokens.next())
    else {
        return err(ProtocolError::UnknownCommand, line_len);
    };
    let cas_token = if mode == StoreMode::Cas {
        match tokens.next() {
            Some(t) => Some(t),
            None => return err(ProtocolError::UnknownCommand, line_len),
        }
    } else {
        None
    };
    // As memcached: one token may follow the byte count (or CAS), `noreply` or ignored; with more the
    // line is an unknown command (ERROR).
    let noreply = tokens.trailing_noreply();
    // Without a byte count we cannot find the end of the data block: answer and let the data block be
    // read as a command, as memcached does.
    let Some(len) = parse_data_len(bytes) else {
        let error = match noreply {
            Some(_) => ProtocolError::BadCommandLine,
            None => ProtocolError::UnknownCommand,
        };
        return err(error, line_len);
    };
    // With one, the data block is swallowed (memcached reads it as a command), as for every other
    // malformed storage line whose length is known: the connection stays in sync.
    let Some(noreply) = noreply else {
        return err_swallow(ProtocolError::UnknownCommand, line_len, len);
    };
    if len > limits.max_value_len {
        // Judged before the key is checked: only a valid key names an item to remove.
        let unlinks =
            (mode == StoreMode::Set && valid_key(key, limits.max_key_len)).then_some((key, false));
        return too_large(line_len, len, unlinks);
    }
    if !valid_key(key, limits.max_key_len) {
        return err_swallow(ProtocolError::BadKey, line_len, len);
    }
    let (Some(flags), Some(exptime)) = (parse_u32(flags), parse_i64(exptime)) else {
        return err_swallow(ProtocolError::BadCommandLine, line_len, len);
    };
    let cas_unique = match cas_token.map(parse_u64) {
        None => 0,
        Some(Some(c)) => c,
        Some(None) => return err_swallow(ProtocolError::BadCommandLine, line_len, len),
    };
    match take_block(buf, landed, line_len, len) {
        Ok((data, consumed)) => Parsed::Request {
            request: Request::Store {
                mode,
                key,
                flags,
                exptime,
                cas_unique,
                data,
                noreply,
            },
            consumed,
        },
        Err(outcome) => awaiting_data(
            outcome,
            key,
            line_len,
            len,
            flags,
            noreply,
            (mode == StoreMode::Set).then_some((key, false)),
        ),
    }
}

fn parse_lease_set<'a>(
    buf: &'a [u8],
    landed: Option<&'a [u8]>,
    mut tokens: Tokens<'a>,
    line_len: usize,
    limits: &Limits,
) -> Parsed<'a> {
    let (Some(key), Some(token), Some(flags), Some(exptime), Some(bytes)) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) else {
        return err(ProtocolError::UnknownCommand, line_len);
    };
    let noreply = match tokens.next() {
        None => Some(false),
        Some(b"noreply") => Some(true),
        Some(_) => None,
    };
    let Some(len) = parse_data_len(bytes) else {
        return err(ProtocolError::BadCommandLine, line_len);
    };
    // Another token where `noreply` may stand: an unknown command, whose data block is swallowed
    // (its length is known) so that it is not read as a command, as for the other storage commands.
    let Some(noreply) = noreply else {
        return err_swallow(ProtocolError::UnknownCommand, line_len, len);
    };
    if len > limits.max_value_len {
        return err_swallow(ProtocolError::TooLarge, line_len, len);
    }
    if !valid_key(key, limits.max_key_len) {
        return err_swallow(ProtocolError::BadKey, line_len, len);
    }
    let (Some(token), Some(flags), Some(exptime)) =
        (parse_u64(token), parse_u32(flags), parse_i64(exptime))
    else {
        return err_swallow(ProtocolError::BadCommandLine, line_len, len);
    };
    match take_block(buf, landed, line_len, len) {
        Ok((data, consumed)) => Parsed::Request {
            request: Request::LeaseSet {
                key,
                token,
                flags,
                exptime,
                data,
                noreply,
            },
            consumed,
        },
        Err(outcome) => awaiting_data(outcome, key, line_len, len, flags, noreply, None),
    }
}

/// What memcached 1.6.18 checks of a meta line before its flags: a key (as sent) within the length
/// limit, and at most [`MAX_META_TOKENS`] tokens.
fn meta_line_checks(
    command: MetaCommand,
    key: &[u8],
    raw: &[u8],
    limits: &Limits,
) -> Result<(), ProtocolError> {
    if key.len() > limits.max_key_len {
        return Err(ProtocolError::BadKey);
    }
    let fixed = if command == MetaCommand::Set { 3 } else { 2 };
    if command != MetaCommand::Debug && fixed + Tokens::new(raw).count() > MAX_META_TOKENS {
        return Err(match command {
            MetaCommand::Get => ProtocolError::MgFlagsTooLong,
            _ => ProtocolError::FlagsTooLong,
        });
    }
    Ok(())
}

/// Parses the flags of a meta request whose line passed [`meta_line_checks`], and checks its key, as
/// memcached 1.6.18 (`_meta_flag_preparse` and the command after it): every flag in [`META_FLAGS`] is
/// taken by every command (and ignored where it means nothing); an unknown flag or a repeated one ends
/// the parse at once; a token that does not parse does not, and the last such error is the answer (an
/// `F` that does not parse has none of its own: `CLIENT_ERROR bad command line format`, unless another
/// token failed). `md` and `ma` answer every flag error with one line. Then the mode (`ms`, `ma`), then
/// the opaque's length. (memcached 1.6.18 checks an `mg`'s or `ma`'s opaque only as it composes the
/// reply, after the command ran; cache-node refuses it before: SERVER.md, "Known differences".)
fn parse_meta_flags<'a>(
    command: MetaCommand,
    key: &[u8],
    raw: &'a [u8],
    limits: &Limits,
) -> Result<MetaFlags<'a>, ProtocolError> {
    let mut f = MetaFlags {
        raw,
        ..MetaFlags::default()
    };
    if command == MetaCommand::Debug {
        // memcached's `me` reads no flags: the key is base64 when the first token is `b`, the rest is
        // ignored.
        f.base64_key = Tokens::new(raw).next() == Some(&b"b"[..]);
        let mut decoded = [0u8; MAX_KEY_LEN];
        if f.base64_key && base64_decode(key, &mut decoded).is_none() {
            return Err(ProtocolError::BadCommandLine);
        }
    } else {
        let mode = match parse_flag_tokens(command, key, &mut f) {
            Ok(mode) => mode,
            Err(_) if matches!(command, MetaCommand::Delete | MetaCommand::Arith) => {
                return Err(ProtocolError::InvalidOrDuplicateFlag)
            }
            Err(e) => return Err(e),
        };
        // The mode, as memcached 1.6.18: case-sensitive; mg and md ignore it.
        match (command, mode) {
            (MetaCommand::Set, Some(m)) => {
                f.set_mode = Some(match m {
                    b'S' => MetaSetMode::Set,
                    b'E' => MetaSetMode::Add,
                    b'R' => MetaSetMode::Replace,
                    b'A' => MetaSetMode::Append,
                    b'P' => MetaSetMode::Prepend,
                    _ => return Err(ProtocolError::InvalidMode),
                })
            }
            (MetaCommand::Arith, Some(m)) => {
                f.arith_mode = Some(match m {
                    b'I' | b'+' => ArithOp::Incr,
                    b'D' | b'-' => ArithOp::Decr,
                    _ => return Err(ProtocolError::InvalidArithMode),
                })
            }
            _ => {}
        }
    }
    // Not memcached's (it takes any bytes but a space): a plain key with a control character, DEL or a
    // tab is refused, as protocol.txt says (SERVER.md, "Known differences").
    if !f.base64_key && !valid_key(key, limits.max_key_len) {
        return Err(ProtocolError::BadKey);
    }
    if f.opaque.is_some_and(|o| 1 + o.len() > MAX_OPAQUE_LEN) {
        return Err(ProtocolError::OpaqueTooLong);
    }
    Ok(f)
}

/// memcached 1.6.18's `_meta_flag_preparse` over `f.raw` (see [`parse_meta_flags`]): sets `f` and
/// returns the `M` token's mode character, if any.
fn parse_flag_tokens(
    command: MetaCommand,
    key: &[u8],
    f: &mut MetaFlags<'_>,
) -> Result<Option<u8>, ProtocolError> {
    let mut seen = [false; 127];
    let mut mode = None;
    // memcached's `has_error` and `errstr`: a token that does not parse is noted and the parse goes on.
    let mut failed: Option<Option<ProtocolError>> = None;
    for token in Tokens::new(f.raw) {
        let flag = token[0];
        let arg = &token[1..];
        match seen.get_mut(usize::from(flag)) {
            Some(seen) if !*seen => *seen = true,
            _ => return Err(ProtocolError::DuplicateFlag),
        }
        let mut fail = |error: Option<ProtocolError>| {
            if failed.is_none() || error.is_some() {
                failed = Some(error);
            }
        };
        let signed = || parse_i64(arg);
        match flag {
            b'b' => {
                f.base64_key = true;
                if base64_decode(key, &mut [0u8; MAX_KEY_LEN]).is_none() {
                    fail(Some(ProtocolError::KeyDecoding));
                }
            }
            b'N' => match signed() {
                Some(n) => f.vivify_ttl = Some(n),
                None => fail(Some(ProtocolError::BadToken)),
            },
            b'T' => match signed() {
                Some(t) => f.ttl = Some(t),
                None => fail(Some(ProtocolError::BadToken)),
            },
            b'R' => match signed() {
                Some(r) => f.recache_ttl = Some(r),
                None => fail(Some(ProtocolError::BadToken)),
            },
            b'C' => match parse_u64(arg) {
                Some(c) => f.compare_cas = Some(c),
                None => fail(Some(ProtocolError::BadToken)),
            },
            // Client flags over 2^32 - 1 are refused (memcached keeps their low 32 bits; SERVER.md,
            // "Known differences"), as in a text set.
            b'F' => match parse_u32(arg) {
                Some(v) => f.client_flags = Some(v),
                None => fail(None),
            },
            b'D' => match parse_u64(arg) {
                Some(d) => f.delta = Some(d),
                None => fail(Some(ProtocolError::BadDeltaToken)),
            },
            b'J' => match parse_u64(arg) {
                Some(j) => f.initial = Some(j),
                None => fail(Some(ProtocolError::BadInitialToken)),
            },
            b'M' => match arg {
                [m] => mode = Some(*m),
                _ => fail(Some(ProtocolError::ModeLength)),
            },
            b'O' => f.opaque = Some(arg),
            b'c' => f.return_cas = true,
            b'f' => f.return_flags = true,
            b'h' => f.return_hit = true,
            b'k' => f.return_key = true,
            b'l' => f.return_last_access = true,
            b's' => f.return_size = true,
            b't' => f.return_ttl = true,
            b'v' => f.return_value = true,
            b'q' => f.quiet = true,
            b'u' => f.no_bump = true,
            b'I' => f.invalidate = true,
            // Undocumented in memcached 1.6.18, taken and ignored.
            b'P' | b'L' => {}
            // From later memcached (1.6.18 refuses them). E0 is refused: CAS 0 means "none" (a store
            // would assign a fresh value and report 0).
            b'E' => match parse_u64(arg) {
                Some(c) if c != 0 => f.new_cas = Some(c),
                _ => fail(Some(ProtocolError::BadToken)),
            },
            b'x' if command == MetaCommand::Delete => f.remove_value = true,
            _ => return Err(ProtocolError::InvalidFlag),
        }
    }
    if let Some(error) = failed {
        return Err(error.unwrap_or(ProtocolError::BadCommandLine));
    }
    Ok(mode)
}

// ---------------------------------------------------------------------------------------------------
// Composing requests (for clients and the router).

/// The decimal digits of `v`, written at the end of `buf` (no allocation).
pub fn format_u64(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

fn put_num(out: &mut BytesMut, n: u64) {
    out.put_slice(format_u64(n, &mut [0u8; 20]));
}

fn put_signed(out: &mut BytesMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_num(out, n.unsigned_abs());
}

/// Writes a decimal number (no allocation).
pub fn compose_number(out: &mut BytesMut, n: u64) {
    put_num(out, n);
}

impl<'a> Request<'a> {
    /// The key of a single-key request, as sent (a meta key with the `b` flag is base64: see
    /// [`decode_key`]); `None` for multi-key gets and keyless commands. For routing by key.
    pub fn key(&self) -> Option<&'a [u8]> {
        match *self {
            Request::Store { key, .. }
            | Request::Delete { key, .. }
            | Request::Arith { key, .. }
            | Request::Touch { key, .. }
            | Request::LeaseGet { key }
            | Request::LeaseSet { key, .. }
            | Request::Meta { key, .. } => Some(key),
            Request::Get { .. }
            | Request::FlushAll { .. }
            | Request::Stats { .. }
            | Request::Version
            | Request::Verbosity { .. }
            | Request::LruCrawlerMetadump { .. }
            | Request::Quit
            | Request::MetaNoop => None,
        }
    }

    /// Whether the server will certainly not answer (`noreply`). Quiet meta requests (`q`) are not
    /// included: they are answered on failure, so a proxy ends a batch of them with `mn`.
    pub fn is_noreply(&self) -> bool {
        match *self {
            Request::Store { noreply, .. }
            | Request::Delete { noreply, .. }
            | Request::Arith { noreply, .. }
            | Request::Touch { noreply, .. }
            | Request::FlushAll { noreply, .. }
            | Request::Verbosity { noreply }
            | Request::LeaseSet { noreply, .. } => noreply,
            _ => false,
        }
    }
}

impl<'a> Request<'a> {
    /// `set KEY 0 0 LEN [noreply]` with `data`: a plain store, no flags, no expiry (what load
    /// generators and benchmarks send).
    pub fn set(key: &'a [u8], data: &'a [u8], noreply: bool) -> Self {
        Request::Store {
            mode: StoreMode::Set,
            key,
            flags: 0,
            exptime: 0,
            cas_unique: 0,
            data,
            noreply,
        }
    }

    /// Writes this request in its canonical wire form. Parsing the output yields an equal request.
    pub fn compose(&self, out: &mut BytesMut) {
        let noreply = |out: &mut BytesMut, nr: bool| {
            if nr {
                out.put_slice(b" noreply");
            }
        };
        match *self {
            Request::Get {
                with_cas,
                touch,
                keys,
            } => {
                match (touch, with_cas) {
                    (None, false) => out.put_slice(b"get"),
                    (None, true) => out.put_slice(b"gets"),
                    (Some(_), false) => out.put_slice(b"gat"),
                    (Some(_), true) => out.put_slice(b"gats"),
                }
                if let Some(t) = touch {
                    out.put_u8(b' ');
                    put_signed(out, t);
                }
                for k in keys.iter() {
                    out.put_u8(b' ');
                    out.put_slice(k);
                }
                out.put_slice(b"\r\n");
            }
            Request::Store {
                mode,
                key,
                flags,
                exptime,
                cas_unique,
                data,
                noreply: nr,
            } => {
                out.put_slice(mode.name().as_bytes());
                out.put_u8(b' ');
                out.put_slice(key);
                out.put_u8(b' ');
                put_num(out, flags.into());
                out.put_u8(b' ');
                put_signed(out, exptime);
                out.put_u8(b' ');
                put_num(out, data.len() as u64);
                if mode == StoreMode::Cas {
                    out.put_u8(b' ');
                    put_num(out, cas_unique);
                }
                noreply(out, nr);
                out.put_slice(b"\r\n");
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            Request::Delete { key, noreply: nr } => {
                out.put_slice(b"delete ");
                out.put_slice(key);
                noreply(out, nr);
                out.put_slice(b"\r\n");
            }
            Request::Arith {
                op,
                key,
                delta,
                noreply: nr,
            } => {
                out.put_slice(if op == ArithOp::Incr {
                    b"incr "
                } else {
                    b"decr "
                });
                out.put_slice(key);
                out.put_u8(b' ');
                put_num(out, delta);
                noreply(out, nr);
                out.put_slice(b"\r\n");
            }
            Request::Touch {
                key,
                exptime,
                noreply: nr,
            } => {
                out.put_slice(b"touch ");
                out.put_slice(key);
                out.put_u8(b' ');
                put_signed(out, exptime);
                noreply(out, nr);
                out.put_slice(b"\r\n");
            }
            Request::FlushAll { delay, noreply: nr } => {
                out.put_slice(b"flush_all");
                if delay != 0 {
                    out.put_u8(b' ');
                    put_signed(out, delay);
                }
                noreply(out, nr);
                out.put_slice(b"\r\n");
            }
            Request::Stats { group, args } => {
                out.put_slice(b"stats");
                for token in std::iter::once(group).chain(args).flatten() {
                    out.put_u8(b' ');
                    out.put_slice(token);
                }
                out.put_slice(b"\r\n");
            }
            Request::Version => out.put_slice(b"version\r\n"),
            Request::Verbosity { noreply: nr } => {
                out.put_slice(b"verbosity 1");
                noreply(out, nr);
                out.put_slice(b"\r\n");
            }
            Request::LruCrawlerMetadump { classes } => {
                out.put_slice(b"lru_crawler metadump ");
                out.put_slice(classes);
                out.put_slice(b"\r\n");
            }
            Request::Quit => out.put_slice(b"quit\r\n"),
            Request::LeaseGet { key } => {
                out.put_slice(b"lease-get ");
                out.put_slice(key);
                out.put_slice(b"\r\n");
            }
            Request::LeaseSet {
                key,
                token,
                flags,
                exptime,
                data,
                noreply: nr,
            } => {
                out.put_slice(b"lease-set ");
                out.put_slice(key);
                out.put_u8(b' ');
                put_num(out, token);
                out.put_u8(b' ');
                put_num(out, flags.into());
                out.put_u8(b' ');
                put_signed(out, exptime);
                out.put_u8(b' ');
                put_num(out, data.len() as u64);
                noreply(out, nr);
                out.put_slice(b"\r\n");
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            Request::Meta {
                command,
                key,
                flags,
                data,
            } => {
                out.put_slice(command.name().as_bytes());
                out.put_u8(b' ');
                out.put_slice(key);
                if command == MetaCommand::Set {
                    out.put_u8(b' ');
                    put_num(out, data.len() as u64);
                }
                for t in flags.tokens() {
                    out.put_u8(b' ');
                    out.put_slice(t);
                }
                out.put_slice(b"\r\n");
                if command == MetaCommand::Set {
                    out.put_slice(data);
                    out.put_slice(b"\r\n");
                }
            }
            Request::MetaNoop => out.put_slice(b"mn\r\n"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Composing responses (for the node and the router).

/// Fixed reply lines.
pub mod reply {
    /// Storage succeeded.
    pub const STORED: &[u8] = b"STORED\r\n";
    /// add/replace/append/prepend/lease-set condition failed.
    pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
    /// cas found a different CAS value.
    pub const EXISTS: &[u8] = b"EXISTS\r\n";
    /// The key is absent.
    pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
    /// delete succeeded.
    pub const DELETED: &[u8] = b"DELETED\r\n";
    /// touch succeeded.
    pub const TOUCHED: &[u8] = b"TOUCHED\r\n";
    /// flush_all, verbosity.
    pub const OK: &[u8] = b"OK\r\n";
    /// End of a retrieval or stats.
    pub const END: &[u8] = b"END\r\n";
    /// stats reset.
    pub const RESET: &[u8] = b"RESET\r\n";
    /// Meta no-op.
    pub const MN: &[u8] = b"MN\r\n";
    /// incr/decr on a non-number.
    pub const NON_NUMERIC: &[u8] =
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
    /// The store could not make room (everything pinned) or similar.
    pub const OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";
    /// Refused connection over the limit (memcached's text).
    pub const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";
}

/// Writes `VALUE key flags bytes [cas]\r\n data \r\n`. The data may come in pieces (the store keeps values
/// as chunks).
pub fn compose_value(out: &mut BytesMut, key: &[u8], flags: u32, data: &[&[u8]], cas: Option<u64>) {
    let len: usize = data.iter().map(|d| d.len()).sum();
    out.reserve(key.len() + len + 48);
    out.put_slice(b"VALUE ");
    out.put_slice(key);
    out.put_u8(b' ');
    put_num(out, flags.into());
    out.put_u8(b' ');
    put_num(out, len as u64);
    if let Some(cas) = cas {
        out.put_u8(b' ');
        put_num(out, cas);
    }
    out.put_slice(b"\r\n");
    for d in data {
        out.put_slice(d);
    }
    out.put_slice(b"\r\n");
}

/// Writes mcrouter's `LVALUE key token flags bytes\r\n data \r\n` (token 1 = another client holds the lease).
pub fn compose_lease_value(out: &mut BytesMut, key: &[u8], token: u64, flags: u32, data: &[&[u8]]) {
    let len: usize = data.iter().map(|d| d.len()).sum();
    out.put_slice(b"LVALUE ");
    out.put_slice(key);
    out.put_u8(b' ');
    put_num(out, token);
    out.put_u8(b' ');
    put_num(out, flags.into());
    out.put_u8(b' ');
    put_num(out, len as u64);
    out.put_slice(b"\r\n");
    for d in data {
        out.put_slice(d);
    }
    out.put_slice(b"\r\n");
}

/// Writes `STAT name value\r\n`.
pub fn compose_stat(out: &mut BytesMut, name: &str, value: impl fmt::Display) {
    use std::fmt::Write as _;
    let _ = write!(StrWriter(out), "STAT {name} {value}\r\n");
}

struct StrWriter<'a>(&'a mut BytesMut);
impl fmt::Write for StrWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// The item facts a meta reply may return, filled by the server from the item.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaItemInfo {
    /// CAS value (`c`).
    pub cas: u64,
    /// Client flags (`f`).
    pub flags: u32,
    /// Remaining TTL in seconds, -1 for none (`t`).
    pub ttl: i64,
    /// Value size (`s`).
    pub size: usize,
    /// Read before (`h`).
    pub hit_before: bool,
    /// Seconds since last access (`l`).
    pub last_access_secs: u32,
}

/// Meta reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCode {
    /// `VA`: value follows.
    Va,
    /// `HD`: success, no value.
    Hd,
    /// `EN`: miss.
    En,
    /// `NS`: not stored.
    Ns,
    /// `EX`: CAS mismatch.
    Ex,
    /// `NF`: not found.
    Nf,
}

impl MetaCode {
    /// The two-letter code.
    pub fn as_bytes(self) -> &'static [u8; 2] {
        match self {
            MetaCode::Va => b"VA",
            MetaCode::Hd => b"HD",
            MetaCode::En => b"EN",
            MetaCode::Ns => b"NS",
            MetaCode::Ex => b"EX",
            MetaCode::Nf => b"NF",
        }
    }
}

/// The lease/staleness flags of an mg reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WinFlags {
    /// `W`: this client won the right to refill.
    pub win: bool,
    /// `X`: the value is stale.
    pub stale: bool,
    /// `Z`: another client already won; wait or use the stale value.
    pub already_sent: bool,
}

/// Writes a meta reply line: the code, for VA the value length, then the flags the request asked for in
/// request order (from `info` where `info` is Some; `O`, `k` and `b` always), then W/X/Z, then for VA the
/// data block. `key` is the key as sent by the client.
pub fn compose_meta(
    out: &mut BytesMut,
    code: MetaCode,
    key: &[u8],
    flags: &MetaFlags<'_>,
    info: Option<&MetaItemInfo>,
    win: WinFlags,
    value: Option<&[&[u8]]>,
) {
    compose_meta_keeping(out, code, key, flags, info, None, win, value);
}

/// Writes a meta reply without W/X/Z: the code, for VA (with `value`) its length, then those of the
/// requested flags whose letter is in `keep` (ms, md and ma return only some of what mg would), then
/// for VA the value.
pub fn compose_meta_subset(
    out: &mut BytesMut,
    code: MetaCode,
    key: &[u8],
    flags: &MetaFlags<'_>,
    info: &MetaItemInfo,
    keep: &[u8],
    value: Option<&[u8]>,
) {
    let parts = value.map(|v| [v]);
    let value = parts.as_ref().map(|p| &p[..]);
    compose_meta_keeping(
        out,
        code,
        key,
        flags,
        Some(info),
        Some(keep),
        WinFlags::default(),
        value,
    );
}

/// [`compose_meta`], with the returned flags limited to the letters in `keep` when given.
#[allow(clippy::too_many_arguments)]
fn compose_meta_keeping(
    out: &mut BytesMut,
    code: MetaCode,
    key: &[u8],
    flags: &MetaFlags<'_>,
    info: Option<&MetaItemInfo>,
    keep: Option<&[u8]>,
    win: WinFlags,
    value: Option<&[&[u8]]>,
) {
    out.put_slice(code.as_bytes());
    if let (MetaCode::Va, Some(v)) = (code, value) {
        let len: usize = v.iter().map(|d| d.len()).sum();
        out.reserve(len + 64);
        out.put_u8(b' ');
        put_num(out, len as u64);
    }
    put_meta_flags(out, key, flags, info, keep);
    // Same order as memcached 1.6: Z, X, W ("X W" for the winner of a stale item, "Z X" for the others).
    if win.already_sent {
        out.put_slice(b" Z");
    }
    if win.stale {
        out.put_slice(b" X");
    }
    if win.win {
        out.put_slice(b" W");
    }
    out.put_slice(b"\r\n");
    if let (MetaCode::Va, Some(v)) = (code, value) {
        for d in v {
            out.put_slice(d);
        }
        out.put_slice(b"\r\n");
    }
}

/// The requested return flags in request order (from `info` where it is Some; `O`, `k` and `b`
/// always), limited to the letters in `keep` when given.
fn put_meta_flags(
    out: &mut BytesMut,
    key: &[u8],
    flags: &MetaFlags<'_>,
    info: Option<&MetaItemInfo>,
    keep: Option<&[u8]>,
) {
    for t in flags.tokens() {
        if keep.is_some_and(|keep| !keep.contains(&t[0])) {
            continue;
        }
        match t[0] {
            b'O' => {
                out.put_slice(b" ");
                out.put_slice(t);
            }
            // As memcached 1.6: a base64 key is followed by `b` right after it, wherever `b` was asked.
            b'k' => {
                out.put_slice(b" k");
                out.put_slice(key);
                if flags.base64_key {
                    out.put_slice(b" b");
                }
            }
            flag => {
                let Some(info) = info else { continue };
                match flag {
                    b'c' => {
                        out.put_slice(b" c");
                        put_num(out, info.cas);
                    }
                    b'f' => {
                        out.put_slice(b" f");
                        put_num(out, info.flags.into());
                    }
                    b't' => {
                        out.put_slice(b" t");
                        put_signed(out, info.ttl);
                    }
                    b's' => {
                        out.put_slice(b" s");
                        put_num(out, info.size as u64);
                    }
                    b'h' => out.put_slice(if info.hit_before { b" h1" } else { b" h0" }),
                    b'l' => {
                        out.put_slice(b" l");
                        put_num(out, info.last_access_secs.into());
                    }
                    _ => {}
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Parsing responses (for clients and the router).

/// One element of a server's reply stream. A retrieval's reply is zero or more `Value`/`LeaseValue`
/// elements followed by `End`; stats are `Stat` elements followed by `End`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// `VALUE key flags bytes [cas]` and its data.
    Value {
        /// The key.
        key: &'a [u8],
        /// Client flags.
        flags: u32,
        /// CAS value (gets/gats).
        cas: Option<u64>,
        /// The data.
        data: &'a [u8],
    },
    /// `LVALUE key token flags bytes` and its data (mcrouter lease-get miss).
    LeaseValue {
        /// The key.
        key: &'a [u8],
        /// Lease token; 1 = another client holds the lease.
        token: u64,
        /// Client flags.
        flags: u32,
        /// The data (a stale value, or empty).
        data: &'a [u8],
    },
    /// `END`.
    End,
    /// `STAT name value`.
    Stat {
        /// The name.
        name: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// A meta reply: code (`VA`, `HD`, `EN`, `NS`, `EX`, `NF`, `MN`, `ME`), its flags, and for VA the data.
    Meta {
        /// The two-letter code.
        code: [u8; 2],
        /// Return flags as sent (space separated).
        flags: &'a [u8],
        /// The value for VA.
        data: Option<&'a [u8]>,
    },
    /// Any other single line: STORED, NOT_STORED, EXISTS, NOT_FOUND, DELETED, TOUCHED, OK, RESET, ERROR,
    /// CLIENT_ERROR .., SERVER_ERROR .., VERSION .., or an incr/decr result.
    Line(&'a [u8]),
}

/// The outcome of [`parse_response`].
#[derive(Debug, PartialEq, Eq)]
pub enum ParsedResponse<'a> {
    /// Need more bytes.
    Incomplete,
    /// One element, which used `consumed` bytes.
    Response {
        /// The element.
        response: Response<'a>,
        /// Bytes used.
        consumed: usize,
    },
    /// The bytes are not a memcached reply (the connection cannot be trusted any longer).
    Invalid,
}

/// Parses one reply element from the start of `buf`.
pub fn parse_response<'a>(buf: &'a [u8], limits: &Limits) -> ParsedResponse<'a> {
    let (line, line_len) = match split_line(buf, limits.max_line_len) {
        Ok(v) => v,
        Err(Parsed::Incomplete) => return ParsedResponse::Incomplete,
        Err(_) => return ParsedResponse::Invalid,
    };
    let mut tokens = Tokens::new(line);
    let Some(first) = tokens.next() else {
        return ParsedResponse::Invalid;
    };
    let done = |response, consumed| ParsedResponse::Response { response, consumed };
    match first {
        b"END" => done(Response::End, line_len),
        b"VALUE" | b"LVALUE" => {
            let lease = first == b"LVALUE";
            let key = tokens.next();
            let token = if lease {
                tokens.next().and_then(parse_u64)
            } else {
                Some(0)
            };
            let flags = tokens.next().and_then(parse_u32);
            let len = tokens
                .next()
                .and_then(parse_u64)
                .and_then(|l| usize::try_from(l).ok());
            let cas = tokens.next().map(parse_u64);
            let (Some(key), Some(token), Some(flags), Some(len)) = (key, token, flags, len) else {
                return ParsedResponse::Invalid;
            };
            if len > limits.max_value_len || matches!(cas, Some(None)) {
                return ParsedResponse::Invalid;
            }
            match take_data(buf, line_len, len) {
                Ok((data, consumed)) => {
                    let response = if lease {
                        Response::LeaseValue {
                            key,
                            token,
                            flags,
                            data,
                        }
                    } else {
                        Response::Value {
                            key,
                            flags,
                            cas: cas.flatten(),
                            data,
                        }
                    };
                    done(response, consumed)
                }
                Err(Parsed::Incomplete) => ParsedResponse::Incomplete,
                Err(_) => ParsedResponse::Invalid,
            }
        }
        b"STAT" => {
            let Some(name) = tokens.next() else {
                return ParsedResponse::Invalid;
            };
            done(
                Response::Stat {
                    name,
                    value: tokens.remainder(),
                },
                line_len,
            )
        }
        b"VA" => {
            let Some(len) = tokens
                .next()
                .and_then(parse_u64)
                .and_then(|l| usize::try_from(l).ok())
            else {
                return ParsedResponse::Invalid;
            };
            if len > limits.max_value_len {
                return ParsedResponse::Invalid;
            }
            let flags = tokens.remainder();
            match take_data(buf, line_len, len) {
                Ok((data, consumed)) => done(
                    Response::Meta {
                        code: *b"VA",
                        flags,
                        data: Some(data),
                    },
                    consumed,
                ),
                Err(Parsed::Incomplete) => ParsedResponse::Incomplete,
                Err(_) => ParsedResponse::Invalid,
            }
        }
        [a, b]
            if matches!(
                &[*a, *b],
                b"HD" | b"EN" | b"NS" | b"EX" | b"NF" | b"MN" | b"ME"
            ) =>
        {
            done(
                Response::Meta {
                    code: [*a, *b],
                    flags: tokens.remainder(),
                    data: None,
                },
                line_len,
            )
        }
        _ => done(Response::Line(line), line_len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &[u8]) -> Parsed<'_> {
        parse_request(s, &Limits::default())
    }

    fn noreply_error(line: &[u8]) -> Option<(ProtocolError, bool)> {
        match req(line) {
            Parsed::Error { error, noreply, .. } => Some((error, noreply)),
            _ => None,
        }
    }

    /// `flush_all` takes its arguments as memcached 1.6.18 does (each form checked against it): up to
    /// two, `noreply` only as the last, the delay first, a second argument that is not `noreply`
    /// ignored. Before, `flush_all 1 2` and `flush_all noreply 5` answered ERROR.
    #[test]
    fn flush_all_arguments_as_memcached() {
        let flush = |line: &[u8]| match req(line) {
            Parsed::Request {
                request: Request::FlushAll { delay, noreply },
                ..
            } => Ok((delay, noreply)),
            Parsed::Error { error, noreply, .. } => Err((error, noreply)),
            other => panic!("{other:?}"),
        };
        use ProtocolError::*;
        for (line, expected) in [
            (&b"flush_all\r\n"[..], Ok((0, false))),
            (b"flush_all -1\r\n", Ok((-1, false))),
            (b"flush_all noreply\r\n", Ok((0, true))),
            (b"flush_all 5 noreply\r\n", Ok((5, true))),
            (b"flush_all noreply noreply\r\n", Err((BadExptime, true))),
            (b"flush_all 1 2\r\n", Ok((1, false))),
            (b"flush_all noreply 5\r\n", Err((BadExptime, false))),
            (b"flush_all abc def\r\n", Err((BadExptime, false))),
            (b"flush_all abc noreply\r\n", Err((BadExptime, true))),
            (b"flush_all 1 2 3\r\n", Err((UnknownCommand, false))),
            (
                b"flush_all 0 noreply extra\r\n",
                Err((UnknownCommand, false)),
            ),
        ] {
            assert_eq!(flush(line), expected, "{line:?}");
        }
    }

    /// memcached's `set_noreply_maybe`: a text command whose last token is `noreply` sends none of its
    /// argument errors; ERROR (unknown command, wrong token count) is still sent, and `noreply` elsewhere on
    /// the line or on a command that takes none silences nothing.
    #[test]
    fn trailing_noreply_silences_argument_errors_only() {
        use ProtocolError::*;
        for (line, expected) in [
            (&b"verbosity noreply\r\n"[..], (BadCommandLine, true)),
            (b"verbosity x\r\n", (BadCommandLine, false)),
            (b"incr k abc noreply\r\n", (BadDelta, true)),
            (b"touch k abc noreply\r\n", (BadExptime, true)),
            (b"flush_all abc noreply\r\n", (BadExptime, true)),
            (b"delete k 5 noreply\r\n", (DeleteUsage, true)),
            (b"delete k noreply 0\r\n", (DeleteUsage, false)),
            (b"delete k 0 0\r\n", (DeleteUsage, false)),
            (b"delete k 0 0 noreply\r\n", (UnknownCommand, false)),
            (b"set k abc 0 1 noreply\r\nx\r\n", (BadCommandLine, true)),
            (b"set k 0 0 1 noreply\r\nxy\r\n", (BadDataChunk, true)),
            (
                b"set k 0 0 1 extra noreply\r\nx\r\n",
                (UnknownCommand, false),
            ),
            (b"incr k 1 noreply extra\r\n", (UnknownCommand, false)),
            (b"gat abc noreply\r\n", (BadExptime, false)),
            (b"bogus noreply\r\n", (UnknownCommand, false)),
        ] {
            assert_eq!(noreply_error(line), Some(expected), "{line:?}");
        }
        let long = format!("touch {} 0 noreply\r\n", "k".repeat(251));
        assert_eq!(noreply_error(long.as_bytes()), Some((BadKey, true)));
        let too_large = format!("set k 0 0 {} noreply\r\n", 2 << 20);
        assert_eq!(noreply_error(too_large.as_bytes()), Some((TooLarge, true)));
        for line in [
            &b"delete k 0 noreply\r\n"[..],
            b"delete k noreply\r\n",
            b"delete k 0\r\n",
        ] {
            assert!(matches!(req(line), Parsed::Request { .. }), "{line:?}");
        }
    }

    #[test]
    fn parses_get_with_many_keys() {
        match req(b"get a bb  ccc\r\n") {
            Parsed::Request {
                request: Request::Get { keys, .. },
                consumed,
            } => {
                assert_eq!(consumed, 15);
                assert_eq!(
                    keys.iter().collect::<Vec<_>>(),
                    vec![&b"a"[..], b"bb", b"ccc"]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A block read elsewhere (into its item's memory) parses as if it followed its line: the same
    /// request for every storage command, `consumed` counting the line and the `\r\n` only; the
    /// block still arriving or its `\r\n` not in yet is incomplete; a bad `\r\n` is the same error.
    #[test]
    fn a_landed_block_parses_as_one_that_followed_its_line() {
        let limits = Limits::default();
        let data = b"hello";
        for line in [
            &b"set k 1 2 5\r\n"[..],
            b"add k 0 0 5 noreply\r\n",
            b"cas k 0 0 5 99\r\n",
            b"ms k 5 F3 T9 c\r\n",
            b"ms aw== 5 b\r\n",
            b"lease-set k 7 0 0 5\r\n",
        ] {
            let whole = [line, data, b"\r\nget k\r\n"].concat();
            let landed = [line, b"\r\nget k\r\n"].concat();
            let (
                Parsed::Request {
                    request: a,
                    consumed: ca,
                },
                Parsed::Request {
                    request: b,
                    consumed: cb,
                },
            ) = (
                parse_request(&whole, &limits),
                parse_landed_request(&landed, data, &limits),
            )
            else {
                panic!("{line:?}");
            };
            assert_eq!(a, b, "{line:?}");
            assert_eq!((ca - data.len(), cb), (line.len() + 2, line.len() + 2));
        }
        let line = b"set k 0 0 5\r\n";
        assert!(matches!(
            parse_landed_request(line, b"hel", &limits),
            Parsed::IncompleteData { data_len: 5, .. }
        ));
        assert!(matches!(
            parse_landed_request(&[&line[..], b"\r"].concat(), data, &limits),
            Parsed::IncompleteData { data_len: 5, .. }
        ));
        assert!(matches!(
            parse_landed_request(&[&line[..], b"xy"].concat(), data, &limits),
            Parsed::Error {
                error: ProtocolError::BadDataChunk,
                consumed: 15,
                ..
            }
        ));
    }

    #[test]
    fn set_needs_whole_data_block() {
        assert_eq!(
            req(b"set k 0 0 5\r\nhel"),
            Parsed::IncompleteData {
                key: b"k",
                line_len: 13,
                data_len: 5,
                flags: 0,
                noreply: false,
                unlinks: Some((b"k", false)),
            }
        );
        // The client flags the item will have: with the key and the length, its size.
        for (line, flags) in [
            (&b"set k 7 0 5\r\nhel"[..], 7),
            (b"cas k 4294967295 0 5 1\r\nh", u32::MAX),
            (b"ms k 5 F9 T0\r\nhe", 9),
            (b"ms k 5 T0\r\nhe", 0),
            (b"lease-set k 5 3 0 5\r\nh", 3),
        ] {
            assert!(
                matches!(req(line), Parsed::IncompleteData { flags: f, .. } if f == flags),
                "{:?}",
                req(line)
            );
        }
        // Only a set or an ms names the item to remove when its value cannot be held.
        assert!(matches!(
            req(b"add k 0 0 5\r\nhel"),
            Parsed::IncompleteData { unlinks: None, .. }
        ));
        assert!(matches!(
            req(b"ms aw== 5 b MA\r\nhel"),
            Parsed::IncompleteData {
                key: b"aw==",
                unlinks: Some((b"aw==", true)),
                ..
            }
        ));
        assert_eq!(req(b"set k 0 0 5"), Parsed::Incomplete);
        assert!(matches!(
            req(b"set k 1 2 5\r\nhello\r\n"),
            Parsed::Request {
                request: Request::Store {
                    flags: 1,
                    exptime: 2,
                    data: b"hello",
                    ..
                },
                consumed: 20
            }
        ));
    }

    #[test]
    fn too_large_swallows_data() {
        let l = Limits {
            max_value_len: 4,
            ..Limits::default()
        };
        assert_eq!(
            parse_request(b"set k 0 0 5\r\n", &l),
            Parsed::Error {
                error: ProtocolError::TooLarge,
                consumed: 13,
                swallow: Swallow::Bytes(7),
                noreply: false,
                unlinks: Some((b"k", false)),
            }
        );
    }

    #[test]
    fn only_a_too_large_set_or_ms_names_a_key_to_unlink() {
        let l = Limits {
            max_value_len: 4,
            ..Limits::default()
        };
        fn unlinks_of<'a>(line: &'a [u8], l: &Limits) -> Option<(&'a [u8], bool)> {
            match parse_request(line, l) {
                Parsed::Error {
                    error: ProtocolError::TooLarge,
                    unlinks,
                    ..
                } => unlinks,
                other => panic!("{line:?}: {other:?}"),
            }
        }
        let unlinks = |line| unlinks_of(line, &l);
        assert_eq!(
            unlinks(b"set k 0 0 5 noreply\r\n"),
            Some((&b"k"[..], false))
        );
        assert_eq!(unlinks(b"ms k 5\r\n"), Some((&b"k"[..], false)));
        assert_eq!(unlinks(b"ms aw== 5 b MA\r\n"), Some((&b"aw=="[..], true)));
        // memcached's other storage commands leave the item; so does mcrouter's lease-set.
        for line in [
            &b"add k 0 0 5\r\n"[..],
            b"replace k 0 0 5\r\n",
            b"append k 0 0 5\r\n",
            b"prepend k 0 0 5\r\n",
            b"cas k 0 0 5 1\r\n",
            b"lease-set k 7 0 0 5\r\n",
        ] {
            assert_eq!(unlinks(line), None, "{line:?}");
        }
        // A bad key with too large a value is still refused as too large, and names nothing.
        assert_eq!(unlinks(b"set k\x01 0 0 5\r\n"), None);
        // Every other refusal names nothing either.
        assert!(matches!(
            parse_request(b"set k 0 0 x\r\n", &l),
            Parsed::Error { unlinks: None, .. }
        ));
    }

    #[test]
    fn key_and_noreply_for_routing() {
        let Parsed::Request { request, .. } = req(b"delete user:1 noreply\r\n") else {
            panic!()
        };
        assert_eq!(request.key(), Some(&b"user:1"[..]));
        assert!(request.is_noreply());
        let Parsed::Request { request, .. } = req(b"mg Zm9v b v\r\n") else {
            panic!()
        };
        assert_eq!(request.key(), Some(&b"Zm9v"[..]));
        assert!(!request.is_noreply());
        let Parsed::Request { request, .. } = req(b"get a b\r\n") else {
            panic!()
        };
        assert_eq!(request.key(), None);
    }

    /// incr/decr, touch, verbosity and the storage commands take one optional token after their arguments,
    /// which means noreply only if it is `noreply`; two are an unknown command. As memcached 1.6.18 (checked
    /// by tests/memcached_diff.rs; before, any extra token was refused here and any number was ignored
    /// after a storage command).
    #[test]
    fn one_token_may_follow_and_only_noreply_counts() {
        for (line, noreply) in [
            (&b"incr k 1\r\n"[..], false),
            (b"decr k 1 noreply\r\n", true),
            (b"incr k 1 bogus\r\n", false),
            (b"touch k 10\r\n", false),
            (b"touch k 10 noreply\r\n", true),
            (b"touch k 10 x\r\n", false),
            (b"verbosity 1\r\n", false),
            (b"verbosity 1 noreply\r\n", true),
            (b"set k 0 0 1 noreply\r\na\r\n", true),
            (b"set k 0 0 1 extra\r\na\r\n", false),
            (b"cas k 0 0 1 5 noreply\r\na\r\n", true),
        ] {
            let Parsed::Request { request, .. } = req(line) else {
                panic!("{line:?}")
            };
            assert_eq!(request.is_noreply(), noreply, "{line:?}");
        }
        for line in [
            &b"incr k 1 noreply extra\r\n"[..],
            b"touch k 10 noreply noreply\r\n",
            b"verbosity 1 noreply x\r\n",
        ] {
            let line_len = line.iter().position(|b| *b == b'\n').unwrap() + 1;
            assert_eq!(
                req(line),
                err(ProtocolError::UnknownCommand, line_len),
                "{line:?}"
            );
        }
        assert_eq!(
            req(b"verbosity x\r\n"),
            err(ProtocolError::BadCommandLine, 13)
        );
        // A storage line with two extra tokens is ERROR too, but its data block is swallowed (memcached
        // reads it as a command): the issue's rule for malformed requests whose length is known.
        for line in [
            &b"set k 0 0 1 noreply extra\r\n"[..],
            b"cas k 0 0 1 5 x noreply\r\n",
        ] {
            let line_len = line.iter().position(|b| *b == b'\n').unwrap() + 1;
            assert_eq!(
                req(line),
                err_swallow(ProtocolError::UnknownCommand, line_len, 1),
                "{line:?}"
            );
        }
    }

    #[test]
    fn absurd_lengths_are_malformed_not_swallowed() {
        // Without the bound the connection would swallow 2^64 bytes: everything it ever receives.
        assert_eq!(
            req(b"set k 0 0 18446744073709551615\r\n"),
            Parsed::Error {
                error: ProtocolError::BadCommandLine,
                consumed: 32,
                swallow: Swallow::Nothing,
                noreply: false,
                unlinks: None,
            }
        );
        assert!(matches!(
            req(b"set k 0 0 2147483645\r\n"),
            Parsed::Error {
                error: ProtocolError::TooLarge,
                swallow: Swallow::Bytes(2147483647),
                ..
            }
        ));
    }

    /// `Request::set` is the plain store load generators send, and parses back to itself.
    #[test]
    fn a_plain_set_composes_and_parses_back() {
        let mut out = BytesMut::new();
        Request::set(b"k", b"abc", true).compose(&mut out);
        assert_eq!(&out[..], b"set k 0 0 3 noreply\r\nabc\r\n");
        match parse_request(&out, &Limits::default()) {
            Parsed::Request { request, consumed } => {
                assert_eq!(request, Request::set(b"k", b"abc", true));
                assert_eq!(consumed, out.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn meta_flags_and_compose_order() {
        let Parsed::Request {
            request: Request::Meta { key, flags, .. },
            ..
        } = req(b"mg foo s v Oab k c\r\n")
        else {
            panic!()
        };
        let mut out = BytesMut::new();
        let info = MetaItemInfo {
            cas: 7,
            size: 2,
            ..Default::default()
        };
        compose_meta(
            &mut out,
            MetaCode::Va,
            key,
            &flags,
            Some(&info),
            WinFlags::default(),
            Some(&[b"hi"]),
        );
        assert_eq!(&out[..], b"VA 2 s2 Oab kfoo c7\r\nhi\r\n");
    }

    #[test]
    fn line_too_long_is_cut() {
        let l = Limits {
            max_line_len: 10,
            ..Limits::default()
        };
        assert_eq!(parse_request(b"get 012345", &l), Parsed::Incomplete);
        assert_eq!(parse_request(b"get 012345\r", &l), Parsed::Incomplete);
        assert!(matches!(
            parse_request(b"get 012345678901", &l),
            Parsed::Error {
                error: ProtocolError::LineTooLong,
                swallow: Swallow::ThroughNewline,
                ..
            }
        ));
        // The line's end already read: only the line goes, and the request after it stays.
        let buf = b"get 0123456789012345\r\nversion\r\n";
        assert_eq!(
            parse_request(buf, &l),
            Parsed::Error {
                error: ProtocolError::LineTooLong,
                consumed: 22,
                swallow: Swallow::Nothing,
                noreply: false,
                unlinks: None,
            }
        );
        assert!(matches!(
            parse_request(&buf[22..], &l),
            Parsed::Request {
                request: Request::Version,
                ..
            }
        ));
    }

    #[test]
    fn response_round_trip() {
        let mut out = BytesMut::new();
        compose_value(&mut out, b"k", 5, &[b"ab", b"c"], Some(9));
        out.put_slice(reply::END);
        let ParsedResponse::Response { response, consumed } =
            parse_response(&out, &Limits::default())
        else {
            panic!()
        };
        assert_eq!(
            response,
            Response::Value {
                key: b"k",
                flags: 5,
                cas: Some(9),
                data: b"abc"
            }
        );
        assert_eq!(
            parse_response(&out[consumed..], &Limits::default()),
            ParsedResponse::Response {
                response: Response::End,
                consumed: 5
            }
        );
    }

    fn meta_outcome(line: &[u8]) -> Result<MetaFlags<'_>, ProtocolError> {
        match req(line) {
            Parsed::Request {
                request: Request::Meta { flags, .. },
                ..
            } => Ok(flags),
            Parsed::Error { error, .. } => Err(error),
            other => panic!("{other:?}"),
        }
    }

    /// Every meta command takes the flags memcached 1.6.18 knows, [`META_FLAGS`], and no other byte
    /// (but cache-node's `E`, and `x` on md), as memcached (checked by hand against it, per command,
    /// each letter and digit alone and with a token). Before, each command took only the flags
    /// protocol.txt lists for it: `md k v` was refused, memcached answers `NF`.
    #[test]
    fn every_meta_command_takes_memcacheds_flags() {
        for command in ["mg", "ms", "md", "ma"] {
            for byte in 1..=255u8 {
                if byte == b' ' || byte == b'\r' || byte == b'\n' {
                    continue;
                }
                // A key that is base64 too, for `b`.
                let length = if command == "ms" { " 1" } else { "" };
                let mut line = format!("{command} azE={length} ").into_bytes();
                // A token every flag that takes one parses (M: one character, a mode of ms and ma).
                line.extend_from_slice(&[byte]);
                line.extend_from_slice(if byte == b'M' { b"S" } else { b"5" });
                line.extend_from_slice(b"\r\n");
                if command == "ms" {
                    line.extend_from_slice(b"a\r\n");
                }
                let ours = byte == b'E' || (byte == b'x' && command == "md");
                let taken = META_FLAGS.contains(&byte) || ours;
                let outcome = meta_outcome(&line);
                let refused = match (command, byte) {
                    ("md" | "ma", _) => Err(ProtocolError::InvalidOrDuplicateFlag),
                    (_, 127..) => Err(ProtocolError::DuplicateFlag),
                    _ => Err(ProtocolError::InvalidFlag),
                };
                match (command, byte) {
                    ("ma", b'M') => assert_eq!(
                        outcome.map(|_| ()),
                        Err(ProtocolError::InvalidArithMode),
                        "{line:?}"
                    ),
                    _ if taken => assert!(outcome.is_ok(), "{line:?}: {outcome:?}"),
                    _ => assert_eq!(outcome.map(|_| ()), refused, "{line:?}"),
                }
            }
        }
    }

    /// A flag token that does not parse does not stop memcached 1.6.18's parse: the last one's line
    /// is the answer, an unknown or repeated flag wins at once, an `F` has no line of its own, md and
    /// ma say one thing for all; the mode is checked after the flags, the opaque after the mode. Each
    /// pair checked by hand against memcached.
    #[test]
    fn meta_flag_errors_answer_as_memcached() {
        use ProtocolError::*;
        for (line, expected) in [
            (&b"mg k Tabc Dabc\r\n"[..], BadDeltaToken),
            (b"mg k Dabc Tabc\r\n", BadToken),
            (b"mg k Jabc Fabc\r\n", BadInitialToken),
            (b"mg k Fabc\r\n", BadCommandLine),
            (b"mg k Fabc Tabc\r\n", BadToken),
            (b"mg k Tabc !\r\n", InvalidFlag),
            (b"mg k Tabc c c\r\n", DuplicateFlag),
            (b"mg k Tabc b\r\n", KeyDecoding),
            (b"mg k b Tabc\r\n", BadToken),
            (b"mg k MII\r\n", ModeLength),
            (b"mg k \x80\r\n", DuplicateFlag),
            (b"md k Cabc\r\n", InvalidOrDuplicateFlag),
            (b"md fd1 b\r\n", InvalidOrDuplicateFlag),
            (b"ma k M\r\n", InvalidOrDuplicateFlag),
            (b"ma k MZ\r\n", InvalidArithMode),
            (b"ma k Mi\r\n", InvalidArithMode),
            (b"ms k 1 M\r\na\r\n", ModeLength),
            (b"ms k 1 Ms\r\na\r\n", InvalidMode),
            (b"ms k 1 Tabc MSS\r\na\r\n", ModeLength),
            (b"ms k 1 S5\r\na\r\n", InvalidFlag),
            (b"ms k 1 F4294967296\r\na\r\n", BadCommandLine),
            (
                b"ms k 1 MZ Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\na\r\n",
                InvalidMode,
            ),
            (
                b"ms k 1 Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\na\r\n",
                OpaqueTooLong,
            ),
            (b"md k Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", OpaqueTooLong),
            (
                b"mg k c f k q t u v C5 D5 F5 I J5 L MZ O1 P R5 s\r\n",
                MgFlagsTooLong,
            ),
            (
                b"ma k c f k q t u v C5 D5 F5 I J5 L MI O1 P R5 s\r\n",
                FlagsTooLong,
            ),
            (
                b"ms k 1 c f k q t u v C5 D5 F5 I J5 L MS O1 P R5\r\na\r\n",
                FlagsTooLong,
            ),
        ] {
            assert_eq!(meta_outcome(line).map(|_| ()), Err(expected), "{line:?}");
        }
        // 17 flags are taken; an opaque of 31 bytes after its O is taken on every command, 32 on none.
        assert!(meta_outcome(b"mg k c f k q t u v C5 D5 F5 I J5 L MZ O1 P R5\r\n").is_ok());
        for command in ["mg k", "md k", "ma k", "ms k 1"] {
            let data = if command.starts_with("ms") {
                "a\r\n"
            } else {
                ""
            };
            let line = |len| format!("{command} O{}\r\n{data}", "a".repeat(len));
            assert_eq!(
                meta_outcome(line(31).as_bytes()).map(|f| f.opaque.map(<[u8]>::len)),
                Ok(Some(31))
            );
            assert_eq!(
                meta_outcome(line(32).as_bytes()).map(|_| ()),
                Err(ProtocolError::OpaqueTooLong)
            );
        }
    }

    /// Base64 keys decode as memcached 1.6.18 decodes them (each checked by hand against it: the key
    /// `mg ... b k` returns as memcached re-encodes it), and are bounded as sent.
    #[test]
    fn base64_keys_decode_as_memcached() {
        let decode = |key: &[u8]| {
            let mut out = [0u8; MAX_KEY_LEN];
            decode_key(key, true, &mut out).map(<[u8]>::to_vec)
        };
        assert_eq!(decode(b"YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(decode(b"YWJj!").as_deref(), Some(&b"abc"[..]));
        assert_eq!(decode(b"!YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(decode(b"YQ==YWJj").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode(b"YR==").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode(b"AA=A").as_deref(), Some(&[0u8, 0][..]));
        for bad in [&b"ab!"[..], b"YWJ", b"YWJj=", b"====", b"A==="] {
            assert_eq!(decode(bad), None, "{bad:?}");
            let line = [&b"mg "[..], bad, b" b\r\n"].concat();
            assert_eq!(
                meta_outcome(&line).map(|_| ()),
                Err(ProtocolError::KeyDecoding)
            );
        }
        // 252 characters (189 bytes decoded) are over the bound, 248 (186) within it.
        let key = |n: usize| "QkJC".repeat(n / 3);
        let line = |n| format!("mg {} b v\r\n", key(n));
        assert_eq!(
            meta_outcome(line(189).as_bytes()).map(|_| ()),
            Err(ProtocolError::BadKey)
        );
        assert!(meta_outcome(line(186).as_bytes()).is_ok());
    }
}
