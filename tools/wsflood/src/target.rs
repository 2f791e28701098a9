//! Where to connect and from where: `ws://` and `wss://` URLs and source
//! address lists.
//!
//! No name is ever resolved: the host must be an IP literal (or
//! `localhost`, which means 127.0.0.1), so the address traffic goes to is
//! always one the user wrote down.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `wss://`: TLS.
    pub tls: bool,
    /// The host as written (an IP literal or `localhost`): the TLS server
    /// name.
    pub hostname: String,
    /// The `Host` header value: the URL's authority as written.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses `ws://HOST[:PORT][/PATH]` or `wss://...` (port 443 by default).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(format!("{url:?}: the URL must start with ws:// or wss://")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err("user information in the URL is not supported".into());
    }
    if path.contains('#') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{path:?}: the path must be printable ASCII without spaces or fragments"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{authority:?}: unterminated IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{authority:?}: junk after the IPv6 address"))?,
            ),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        None if tls => 443,
        None => 80,
        Some(p) => p.parse().map_err(|_| format!("{p:?}: not a port number"))?,
    };
    if port == 0 {
        return Err("port 0 is not a destination".into());
    }
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse()
            .map_err(|_| format!("{host:?}: the host must be an IP address or localhost (wsflood resolves no names)"))?
    };
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        tls,
        hostname: host.to_string(),
        host: authority.to_string(),
        path,
    })
}

/// Loopback: 127.0.0.0/8 and ::1 (and ::ffff:127.x.y.z).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Most source addresses one list may name.
pub const MAX_SOURCE_ADDRS: usize = 1 << 16;

/// Parses `A,B-C,...`: single addresses and inclusive ranges, all of one
/// family.
pub fn parse_source_addrs(list: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parse =
            |s: &str| -> Result<IpAddr, String> { s.trim().parse().map_err(|_| format!("{s:?}: not an IP address")) };
        match item.split_once('-') {
            None => out.push(parse(item)?),
            Some((a, b)) => match (parse(a)?, parse(b)?) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    let (a, b) = (u32::from(a), u32::from(b));
                    check_range(item, u128::from(a), u128::from(b), out.len())?;
                    out.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    let (a, b) = (u128::from(a), u128::from(b));
                    check_range(item, a, b, out.len())?;
                    out.extend((a..=b).map(|v| IpAddr::V6(Ipv6Addr::from(v))));
                }
                _ => return Err(format!("{item:?}: a range must not mix IPv4 and IPv6")),
            },
        }
        if out.len() > MAX_SOURCE_ADDRS {
            return Err(format!("more than {MAX_SOURCE_ADDRS} source addresses"));
        }
    }
    if out.is_empty() {
        return Err("empty source address list".into());
    }
    Ok(out)
}

fn check_range(item: &str, a: u128, b: u128, have: usize) -> Result<(), String> {
    if a > b {
        return Err(format!("{item:?}: the range runs backwards"));
    }
    if b - a >= (MAX_SOURCE_ADDRS - have.min(MAX_SOURCE_ADDRS)) as u128 {
        return Err(format!("{item:?}: more than {MAX_SOURCE_ADDRS} source addresses"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("ws://127.0.0.1:9001/echo").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!((t.host.as_str(), t.path.as_str()), ("127.0.0.1:9001", "/echo"));
        let t = parse_url("ws://localhost").unwrap();
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/");
        let t = parse_url("ws://[::1]:8080/broadcast/x?y=1").unwrap();
        assert_eq!(t.addr, "[::1]:8080".parse().unwrap());
        assert_eq!(t.path, "/broadcast/x?y=1");
        let t = parse_url("ws://127.0.0.2:1?q").unwrap();
        assert_eq!(t.path, "/?q");
        assert!(!t.tls);
        let t = parse_url("wss://localhost/echo").unwrap();
        assert_eq!(t.addr, "127.0.0.1:443".parse().unwrap());
        assert!(t.tls);
        assert_eq!(t.hostname, "localhost");
        let t = parse_url("wss://[::1]:9443").unwrap();
        assert_eq!((t.addr, t.hostname.as_str()), ("[::1]:9443".parse().unwrap(), "::1"));
        for bad in [
            "wsss://127.0.0.1/",
            "http://127.0.0.1/",
            "ws://example.com/",
            "ws://127.0.0.1:99999/",
            "ws://127.0.0.1:0/",
            "ws://[::1/",
            "ws://u@127.0.0.1/",
            "ws://127.0.0.1/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.255.0.9".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::2".parse().unwrap()));
    }

    #[test]
    fn source_lists() {
        let v = parse_source_addrs("127.0.0.1, 127.0.0.2-127.0.0.4").unwrap();
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(v, want);
        assert_eq!(parse_source_addrs("127.0.0.255-127.0.1.1").unwrap().len(), 3);
        assert_eq!(parse_source_addrs("::1-::3").unwrap().len(), 3);
        assert!(parse_source_addrs("127.0.0.4-127.0.0.1").is_err());
        assert!(parse_source_addrs("127.0.0.1-::1").is_err());
        assert!(parse_source_addrs("").is_err());
        assert!(parse_source_addrs("10.0.0.0-10.255.255.255").is_err());
    }
}
