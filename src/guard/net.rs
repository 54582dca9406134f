//! Caller addresses: CIDR ranges (`source_ips`, `server.trusted_proxies`) and the client behind
//! trusted proxies.
//!
//! The socket peer is the caller unless it is a trusted proxy; then `X-Forwarded-For` is read
//! from the right, and the first address that is not a trusted proxy is the client (each proxy
//! appends the address it saw, so everything left of that is the client's own claim). IPv4-mapped
//! IPv6 addresses (`::ffff:192.0.2.1`, a dual-stack socket's view of an IPv4 peer) are the IPv4
//! address. Only `X-Forwarded-For` is read: `Forwarded`, `X-Real-IP` and the like never are.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;

/// An IP network: an address and a prefix length. IPv4 ranges match IPv4 (and IPv4-mapped)
/// addresses, IPv6 ranges IPv6 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(self.prefix) & (u32::from(net) ^ u32::from(ip)) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(self.prefix) & (u128::from(net) ^ u128::from(ip)) == 0
            }
            _ => false,
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// `192.0.2.0/24`, `2001:db8::/32`, or one address (`/32`, `/128`). Refused: host bits set
/// (`192.0.2.1/24` is more likely a typo than a range), IPv4-mapped IPv6 (write the IPv4 form),
/// zone ids, spaces, a prefix that is not plain decimal.
impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        if let IpAddr::V6(v6) = network
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(format!("{text:?} is IPv4-mapped: write the IPv4 form"));
        }
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max && len.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        let cidr = Self { network, prefix };
        let host_bits = match network {
            IpAddr::V4(v4) => u32::from(v4) & !mask32(prefix) != 0,
            IpAddr::V6(v6) => u128::from(v6) & !mask128(prefix) != 0,
        };
        if host_bits {
            return Err(format!(
                "{text:?} has host bits set: write the network address"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A trusted proxy sent an `X-Forwarded-For` that is not a list of IP addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("X-Forwarded-For from a trusted proxy is not a list of IP addresses")]
pub struct MalformedForwardedFor;

/// The client's address: `peer`, or when `peer` is a trusted proxy, the rightmost
/// `X-Forwarded-For` address that is not one (the leftmost if all are; `peer` if there is no
/// header). Every element must be an IP address, optionally with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`) or in brackets; anything else from a trusted proxy is refused.
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> Result<IpAddr, MalformedForwardedFor> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Ok(peer);
    }
    let mut client = None;
    let mut leftmost = None;
    // Header fields in reverse order, each list right to left (RFC 9110 §5.3: several fields
    // are one comma-separated list, in order).
    for field in headers.get_all("x-forwarded-for").iter().rev() {
        let text = field.to_str().map_err(|_| MalformedForwardedFor)?;
        for element in text.rsplit(',') {
            let ip = element_address(element.trim_matches([' ', '\t']))?;
            leftmost = Some(ip);
            if client.is_none() && !is_trusted(ip) {
                client = Some(ip);
            }
        }
    }
    Ok(client.or(leftmost).unwrap_or(peer))
}

fn element_address(text: &str) -> Result<IpAddr, MalformedForwardedFor> {
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .ok_or(MalformedForwardedFor)?
                .parse::<std::net::Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| MalformedForwardedFor)
        })?;
    Ok(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_match_their_family_and_mapped_peers() {
        let ranges = cidrs(&["192.0.2.0/24", "2001:db8::/32", "203.0.113.7"]);
        let any = |addr: &str| ranges.iter().any(|c| c.contains(ip(addr)));
        for inside in [
            "192.0.2.1",
            "192.0.2.255",
            "::ffff:192.0.2.9",
            "2001:db8::1",
            "2001:db8:ffff::",
            "203.0.113.7",
            "::ffff:203.0.113.7",
        ] {
            assert!(any(inside), "{inside}");
        }
        for outside in [
            "192.0.3.0",
            "192.0.1.255",
            "2001:db9::",
            "203.0.113.8",
            "::192.0.2.1",
            "::ffff:c000:301",
            "64:ff9b::192.0.2.1",
        ] {
            assert!(!any(outside), "{outside}");
        }
        let all = cidrs(&["0.0.0.0/0", "::/0"]);
        assert!(all[0].contains(ip("::ffff:10.0.0.1")) && !all[0].contains(ip("::1")));
        assert!(all[1].contains(ip("::1")) && !all[1].contains(ip("10.0.0.1")));
    }

    #[test]
    fn ranges_that_are_refused() {
        for bad in [
            "",
            "192.0.2.0/",
            "192.0.2.0/33",
            "192.0.2.1/24",
            "2001:db8::1/32",
            "::ffff:192.0.2.0/120",
            "192.0.2.0/+24",
            "192.0.2.0/024x",
            " 192.0.2.0/24",
            "192.0.2.0/24 ",
            "192.0.2",
            "010.0.0.1",
            "fe80::1%eth0",
            "2001:db8::/129",
            "example.com/24",
            "192.0.2.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "2001:DB8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = cidrs(&["10.0.0.0/8", "fd00::/8"]);
        let client = |peer: &str, xff: &[&str]| client_address(ip(peer), &headers(xff), &trusted);
        // An untrusted peer's header is ignored: it is the caller.
        assert_eq!(
            client("198.51.100.1", &["192.0.2.1"]),
            Ok(ip("198.51.100.1"))
        );
        assert_eq!(client("198.51.100.1", &["garbage"]), Ok(ip("198.51.100.1")));
        // Rightmost untrusted hop: a client cannot hide behind the addresses it prepends.
        assert_eq!(client("10.0.0.1", &["192.0.2.1"]), Ok(ip("192.0.2.1")));
        assert_eq!(
            client("10.0.0.1", &["192.0.2.66, 198.51.100.7, 10.1.1.1"]),
            Ok(ip("198.51.100.7"))
        );
        assert_eq!(
            client("10.0.0.1", &["192.0.2.66", "198.51.100.7", "10.1.1.1"]),
            Ok(ip("198.51.100.7"))
        );
        assert_eq!(
            client("::ffff:10.0.0.1", &["::ffff:192.0.2.1"]),
            Ok(ip("192.0.2.1"))
        );
        assert_eq!(client("fd00::1", &["2001:db8::5"]), Ok(ip("2001:db8::5")));
        assert_eq!(
            client("10.0.0.1", &["192.0.2.1:4711", "[2001:db8::1]:80"]),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::1]"]),
            Ok(ip("2001:db8::1"))
        );
        // All hops trusted: the leftmost; no header: the proxy itself.
        assert_eq!(
            client("10.0.0.1", &["10.0.0.3,10.0.0.2"]),
            Ok(ip("10.0.0.3"))
        );
        assert_eq!(client("10.0.0.1", &[]), Ok(ip("10.0.0.1")));
        // Malformed from a trusted proxy, anywhere in the list: refused, never skipped.
        for bad in [
            &["unknown"][..],
            &[""],
            &["192.0.2.1,"],
            &[",192.0.2.1"],
            &["192.0.2.1 198.51.100.7"],
            &["192.0.2.1;198.51.100.7"],
            &["192.0.2.1", "nope"],
            &["garbage, 192.0.2.1"],
            &["_hidden"],
            &["192.0.2.1:99999"],
            &["[192.0.2.1]"],
            &["fe80::1%eth0"],
        ] {
            assert_eq!(
                client("10.0.0.1", bad),
                Err(MalformedForwardedFor),
                "{bad:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"192.0.2.1\xff").unwrap(),
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &trusted),
            Err(MalformedForwardedFor)
        );
    }
}
