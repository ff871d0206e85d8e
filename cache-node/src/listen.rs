//! The addresses of `-l`, in memcached's forms, and binding them.
//!
//! memcached 1.6 reads `-l` as a list separated by `,` or `;` (and `-l` may be given more than once), each
//! entry one of: an IPv4 address or a host name, optionally followed by `:PORT`; an IPv6 address in
//! brackets, optionally followed by `:PORT` (`[::1]:11311`); an IPv6 address without brackets, then without
//! a port (`::1`); `*` for every address of both families. An entry without a port takes `-p`'s. A host name
//! is resolved (getaddrinfo) and every address it has is bound, so `-l localhost` serves 127.0.0.1 and, where
//! the host file says so, ::1. Binding follows memcached too: an address in use stops the start, any other
//! address of an entry that cannot be bound (an IPv6 loopback on a host without IPv6) is skipped with a
//! warning, and an entry none of whose addresses can be bound stops the start. IPv6 sockets are IPv6-only
//! (memcached sets `IPV6_V6ONLY`), so `*` can bind `0.0.0.0` and `::` on the same port.
//!
//! [`parse`] is pure; [`resolve`] and [`bind`] do the I/O. Not here: serving the listeners
//! ([`crate::server::run_listeners`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use tokio::net::{TcpListener, TcpSocket};

/// Why a `-l` value cannot be served. Each message names the entry it is about.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("bad listen address {entry:?}: an IPv6 address in brackets needs its closing ']'")]
    UnclosedBracket { entry: String },
    #[error("bad listen address {entry:?}: only ':PORT' may follow ']'")]
    AfterBracket { entry: String },
    #[error("bad listen address {entry:?}: invalid port number {port:?} (0 to 65535)")]
    BadPort { entry: String, port: String },
    #[error("bad listen address {entry:?}: no address given")]
    EmptyHost { entry: String },
    #[error("bad listen address {entry:?}: {reason}")]
    Unresolved { entry: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot listen on {entry:?}: no address of it could be bound ({reasons})")]
    NothingBound { entry: String, reasons: String },
}

/// What an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// `*`: every address, IPv4 and IPv6.
    Any,
    /// An address literal.
    Ip(IpAddr),
    /// A host name, resolved when binding.
    Name(String),
}

/// One entry of `-l`: the host and the port it is bound with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The entry as given, for messages.
    pub entry: String,
    /// What to bind.
    pub host: ListenHost,
    /// Its own `:PORT`, else `-p`'s.
    pub port: u16,
}

/// Splits and reads every `-l` value (each may itself be a list). Empty entries (`a,,b`) are skipped, as
/// memcached's tokenizer does; values with no entry at all (`-l ""`) are an error, not a server that
/// listens nowhere.
pub fn parse(values: &[String], default_port: u16) -> Result<Vec<ListenSpec>, ListenError> {
    let specs = values
        .iter()
        .flat_map(|v| v.split([',', ';']))
        .filter(|e| !e.is_empty())
        .map(|e| parse_entry(e, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        // The whole value is the entry here: it held no address at all.
        return Err(ListenError::EmptyHost {
            entry: values.join(" "),
        });
    }
    Ok(specs)
}

fn parse_entry(entry: &str, default_port: u16) -> Result<ListenSpec, ListenError> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| ListenError::UnclosedBracket {
                entry: entry.to_string(),
            })?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| ListenError::AfterBracket {
                        entry: entry.to_string(),
                    })?,
            ),
        };
        (inside, port)
    } else {
        match entry.split_once(':') {
            // One colon: host and port. More: an IPv6 address without brackets, hence without a port.
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (entry, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse().map_err(|_| ListenError::BadPort {
            entry: entry.to_string(),
            port: p.to_string(),
        })?,
    };
    let host = if host == "*" {
        ListenHost::Any
    } else if host.is_empty() {
        return Err(ListenError::EmptyHost {
            entry: entry.to_string(),
        });
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        ListenHost::Ip(ip)
    } else {
        ListenHost::Name(host.to_string())
    };
    Ok(ListenSpec {
        entry: entry.to_string(),
        host,
        port,
    })
}

/// The socket addresses an entry stands for, without repeats, in the resolver's order.
pub fn resolve(spec: &ListenSpec) -> Result<Vec<SocketAddr>, ListenError> {
    let mut addrs: Vec<SocketAddr> = match &spec.host {
        ListenHost::Any => vec![
            (Ipv4Addr::UNSPECIFIED, spec.port).into(),
            (Ipv6Addr::UNSPECIFIED, spec.port).into(),
        ],
        ListenHost::Ip(ip) => vec![(*ip, spec.port).into()],
        ListenHost::Name(name) => (name.as_str(), spec.port)
            .to_socket_addrs()
            .map_err(|e| ListenError::Unresolved {
                entry: spec.entry.clone(),
                reason: e.to_string(),
            })?
            .collect(),
    };
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(*a));
    if addrs.is_empty() {
        return Err(ListenError::Unresolved {
            entry: spec.entry.clone(),
            reason: "the name has no address".to_string(),
        });
    }
    Ok(addrs)
}

/// Binds one address, `backlog` connections queued before they are accepted (memcached's `-b`, 1024 by
/// default as tokio's and std's `bind`): address reuse on (a restart does not wait out TIME_WAIT), IPv6
/// sockets IPv6-only. Must run inside a tokio runtime.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        let socket = TcpSocket::new_v6()?;
        set_ipv6_only(&socket)?;
        socket
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

fn set_ipv6_only(socket: &TcpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is a live socket owned by `socket`; the option value is a c_int of the size
    // passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What [`bind_all`] bound.
pub struct Bound {
    /// One per address bound, in the order of the entries and of their addresses.
    pub listeners: Vec<TcpListener>,
    /// Addresses skipped because they could not be bound (but not for being in use), with why: for the
    /// caller to log.
    pub skipped: Vec<(SocketAddr, io::Error)>,
}

/// Binds every address of every entry, with memcached's rules (module docs).
pub fn bind_all(specs: &[ListenSpec], backlog: u32) -> Result<Bound, ListenError> {
    let mut listeners = Vec::new();
    let mut skipped = Vec::new();
    for spec in specs {
        let mut bound = 0;
        let mut reasons = Vec::new();
        for addr in resolve(spec)? {
            match bind(addr, backlog) {
                Ok(l) => {
                    listeners.push(l);
                    bound += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    return Err(ListenError::Bind { addr, source: e })
                }
                Err(e) => {
                    reasons.push(format!("{addr}: {e}"));
                    skipped.push((addr, e));
                }
            }
        }
        if bound == 0 {
            return Err(ListenError::NothingBound {
                entry: spec.entry.clone(),
                reasons: reasons.join("; "),
            });
        }
    }
    Ok(Bound { listeners, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(entry: &str) -> Result<ListenSpec, ListenError> {
        let mut specs = parse(&[entry.to_string()], 11211)?;
        assert_eq!(specs.len(), 1, "{entry}");
        Ok(specs.remove(0))
    }

    fn host_port(entry: &str) -> (ListenHost, u16) {
        let s = one(entry).unwrap();
        (s.host, s.port)
    }

    fn ip(s: &str) -> ListenHost {
        ListenHost::Ip(s.parse().unwrap())
    }

    #[test]
    fn memcached_forms_of_an_entry() {
        assert_eq!(host_port("127.0.0.1"), (ip("127.0.0.1"), 11211));
        assert_eq!(host_port("127.0.0.1:11311"), (ip("127.0.0.1"), 11311));
        assert_eq!(host_port("[::1]"), (ip("::1"), 11211));
        assert_eq!(host_port("[::1]:0"), (ip("::1"), 0));
        // Without brackets an IPv6 address has no port: the last group is part of the address.
        assert_eq!(host_port("::1"), (ip("::1"), 11211));
        assert_eq!(host_port("fe80::1:2"), (ip("fe80::1:2"), 11211));
        assert_eq!(host_port("*"), (ListenHost::Any, 11211));
        assert_eq!(host_port("*:7"), (ListenHost::Any, 7));
        assert_eq!(
            host_port("localhost:7"),
            (ListenHost::Name("localhost".into()), 7)
        );
    }

    #[test]
    fn lists_split_on_commas_and_semicolons_across_repeated_flags() {
        let specs = parse(
            &["127.0.0.1,[::1]:5;localhost".to_string(), "*:9".to_string()],
            11211,
        )
        .unwrap();
        let got: Vec<(ListenHost, u16)> = specs.into_iter().map(|s| (s.host, s.port)).collect();
        assert_eq!(
            got,
            vec![
                (ip("127.0.0.1"), 11211),
                (ip("::1"), 5),
                (ListenHost::Name("localhost".into()), 11211),
                (ListenHost::Any, 9),
            ]
        );
        assert_eq!(parse(&["a,,b,".to_string()], 1).unwrap().len(), 2);
        for nothing in [&[""][..], &[",;"], &["", ","]] {
            let values: Vec<String> = nothing.iter().map(|v| v.to_string()).collect();
            let e = parse(&values, 1).unwrap_err().to_string();
            assert!(e.contains("no address given"), "{nothing:?}: {e}");
        }
    }

    #[test]
    fn malformed_entries_are_named_in_the_error() {
        for (entry, expect) in [
            ("[::1", "closing ']'"),
            ("[::1]x", "only ':PORT' may follow ']'"),
            ("127.0.0.1:http", "invalid port number \"http\""),
            ("127.0.0.1:70000", "invalid port number \"70000\""),
            ("[::1]:", "invalid port number \"\""),
            (":11211", "no address given"),
        ] {
            let e = one(entry).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{entry:?}")) && e.contains(expect),
                "{entry}: {e}"
            );
        }
    }

    #[test]
    fn any_stands_for_both_families_and_names_resolve() {
        let any = resolve(&one("*:5").unwrap()).unwrap();
        assert_eq!(
            any,
            vec![
                "0.0.0.0:5".parse::<SocketAddr>().unwrap(),
                "[::]:5".parse().unwrap()
            ]
        );
        let local = resolve(&one("localhost:5").unwrap()).unwrap();
        assert!(local.contains(&"127.0.0.1:5".parse().unwrap()), "{local:?}");
        let e = resolve(&one("no-such-host.invalid").unwrap()).unwrap_err();
        assert!(e.to_string().starts_with("bad listen address"), "{e}");
    }

    /// `*` binds 0.0.0.0 and :: on one port; without IPV6_V6ONLY the second bind fails (the IPv6 socket
    /// would also take IPv4), which `bind_all` reports as an address in use.
    #[tokio::test]
    async fn ipv6_sockets_are_ipv6_only() {
        let v4 = bind("0.0.0.0:0".parse().unwrap(), 16).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), 16);
        if let Err(e) = &v6 {
            // Only a host without IPv6 excuses this.
            let no_ipv6 = e.kind() == io::ErrorKind::AddrNotAvailable
                || e.raw_os_error() == Some(libc::EAFNOSUPPORT);
            assert!(no_ipv6, "{e}");
        }
    }
}
