//! Per-replica memory of the token endpoint: failed attempts per client id and per peer, and
//! the `jti`s of assertions already used.
//!
//! Both are in this process only. Failure counts: an attacker spreading attempts over N replicas
//! gets N times the budget, which still bounds guessing (and secrets are hashes of random
//! values). Replay memory: an assertion with a `jti` is accepted once per replica, so with N
//! replicas behind a load balancer it could be used up to N times before it expires; each use
//! only yields a token for the same client its signer could ask for anyway, so this is a
//! bound on duplication, not an escalation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Peers tracked at once. A flood of distinct addresses beyond this (after expired windows are
/// dropped) goes untracked rather than growing memory; the per-client limit still holds.
const MAX_PEERS: usize = 10_000;
/// Assertion `jti`s remembered at once. Only assertions that passed every other check get
/// here, so filling it takes a signer's key; when full, assertions with a `jti` are refused
/// (503) rather than accepted unremembered.
const MAX_JTIS: usize = 50_000;

/// Failed attempts in the current window of one client id or peer.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    failures: u32,
}

/// Counts failed token requests and says when to stop listening.
#[derive(Debug)]
pub(super) struct FailureLimiter {
    window: u64,
    per_client: u32,
    /// 0: off.
    per_peer: u32,
    clients: Mutex<HashMap<String, Window>>,
    peers: Mutex<HashMap<IpAddr, Window>>,
}

impl FailureLimiter {
    pub(super) fn new(window_secs: u64, per_client: u32, per_peer: u32) -> Self {
        Self {
            window: window_secs.max(1),
            per_client,
            per_peer,
            clients: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` while `peer` is over its limit.
    pub(super) fn check_peer(&self, peer: IpAddr, now: u64) -> Result<(), u64> {
        if self.per_peer == 0 {
            return Ok(());
        }
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        self.check(peers.get(&peer_key(peer)), self.per_peer, now)
    }

    /// `Err(seconds to wait)` while the configured `client_id` is over its limit.
    pub(super) fn check_client(&self, client_id: &str, now: u64) -> Result<(), u64> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        self.check(clients.get(client_id), self.per_client, now)
    }

    fn check(&self, window: Option<&Window>, limit: u32, now: u64) -> Result<(), u64> {
        match window {
            Some(w) if w.failures >= limit && now < w.start + self.window => {
                Err((w.start + self.window - now).max(1))
            }
            Some(_) | None => Ok(()),
        }
    }

    /// A failed attempt from `peer`, against `client` when it named a configured client.
    pub(super) fn failed(&self, peer: IpAddr, client: Option<&str>, now: u64) {
        if let Some(id) = client {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            match clients.get_mut(id) {
                Some(w) => self.count(w, now),
                None => {
                    clients.insert(
                        id.to_owned(),
                        Window {
                            start: now,
                            failures: 1,
                        },
                    );
                }
            }
        }
        if self.per_peer == 0 {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let key = peer_key(peer);
        if let Some(w) = peers.get_mut(&key) {
            self.count(w, now);
            return;
        }
        if peers.len() >= MAX_PEERS {
            let window = self.window;
            peers.retain(|_, w| now < w.start + window);
        }
        if peers.len() < MAX_PEERS {
            peers.insert(
                key,
                Window {
                    start: now,
                    failures: 1,
                },
            );
        }
    }

    fn count(&self, w: &mut Window, now: u64) {
        if now >= w.start + self.window {
            *w = Window {
                start: now,
                failures: 1,
            };
        } else {
            w.failures = w.failures.saturating_add(1);
        }
    }
}

/// IPv4 addresses as they are (IPv4-mapped IPv6 included); IPv6 by /64, the block one host
/// usually holds, so one machine cannot take a fresh address per attempt.
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

/// Why an assertion's `jti` was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplayError {
    /// Seen before, and that assertion has not expired.
    Replayed,
    /// The memory is full of live entries.
    Full,
}

/// `jti`s of accepted assertions, each kept until its assertion expires (RFC 7523 §3 item 7).
#[derive(Debug, Default)]
pub(super) struct ReplayMemory {
    /// (client id, jti) → the moment it may be forgotten.
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl ReplayMemory {
    /// Records `jti` for `client` until `until`; `Err` if it is already there.
    pub(super) fn admit(
        &self,
        client: &str,
        jti: &str,
        until: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (client.to_owned(), jti.to_owned());
        if seen.get(&key).is_some_and(|&t| now < t) {
            return Err(ReplayError::Replayed);
        }
        if seen.len() >= MAX_JTIS {
            seen.retain(|_, &mut t| now < t);
            if seen.len() >= MAX_JTIS {
                return Err(ReplayError::Full);
            }
        }
        seen.insert(key, until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn a_client_over_its_limit_waits_for_the_window() {
        let l = FailureLimiter::new(60, 3, 0);
        for _ in 0..3 {
            assert_eq!(l.check_client("c", 100), Ok(()));
            l.failed(PEER, Some("c"), 100);
        }
        assert_eq!(l.check_client("c", 100), Err(60));
        assert_eq!(l.check_client("c", 159), Err(1));
        assert_eq!(l.check_client("other", 100), Ok(()), "per client id");
        assert_eq!(l.check_peer(PEER, 100), Ok(()), "per-peer limit off");
        assert_eq!(l.check_client("c", 160), Ok(()));
        l.failed(PEER, Some("c"), 160);
        assert_eq!(l.check_client("c", 160), Ok(()), "a new window starts at 1");
    }

    /// The attacker's way around a per-address limit: a fresh IPv6 address per attempt from
    /// the same /64, or the IPv4-mapped form of the same address.
    #[test]
    fn peers_are_counted_by_address_and_ipv6_by_64() {
        let l = FailureLimiter::new(60, 100, 2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        l.failed(a, None, 0);
        l.failed(b, None, 0);
        assert_eq!(
            l.check_peer("2001:db8:1:2::77".parse().unwrap(), 1),
            Err(59)
        );
        assert_eq!(l.check_peer("2001:db8:1:3::1".parse().unwrap(), 1), Ok(()));
        l.failed(PEER, None, 0);
        l.failed("::ffff:192.0.2.1".parse().unwrap(), None, 0);
        assert_eq!(l.check_peer(PEER, 0), Err(60));
    }

    #[test]
    fn peer_table_is_bounded_and_drops_expired_windows_first() {
        let l = FailureLimiter::new(10, 100, 1);
        for i in 0..MAX_PEERS {
            let ip = IpAddr::from((u32::try_from(i).unwrap() + 1).to_be_bytes());
            l.failed(ip, None, 0);
        }
        l.failed(PEER, None, 5);
        assert_eq!(l.check_peer(PEER, 5), Ok(()), "full: untracked");
        l.failed(PEER, None, 20);
        assert_eq!(l.check_peer(PEER, 20), Err(10), "expired windows made room");
    }

    /// The attacker's replay: the same assertion again, before it expires; after, it is
    /// refused by its `exp` anyway and may be forgotten.
    #[test]
    fn a_jti_is_admitted_once_until_it_expires() {
        let m = ReplayMemory::default();
        assert_eq!(m.admit("c", "j1", 100, 10), Ok(()));
        assert_eq!(m.admit("c", "j1", 100, 99), Err(ReplayError::Replayed));
        assert_eq!(m.admit("c2", "j1", 100, 10), Ok(()), "per client");
        assert_eq!(m.admit("c", "j2", 100, 10), Ok(()));
        assert_eq!(m.admit("c", "j1", 200, 100), Ok(()));
    }

    #[test]
    fn a_full_memory_refuses_rather_than_forgets() {
        let m = ReplayMemory::default();
        for i in 0..MAX_JTIS {
            m.admit("c", &i.to_string(), 1_000, 0).unwrap();
        }
        assert_eq!(m.admit("c", "new", 1_000, 1), Err(ReplayError::Full));
        assert_eq!(m.admit("c", "0", 1_000, 1), Err(ReplayError::Replayed));
        assert_eq!(
            m.admit("c", "new", 2_000, 1_000),
            Ok(()),
            "expired ones dropped"
        );
    }
}
