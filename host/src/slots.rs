//! In-flight slots: how many requests are being handled at once, in all and per client address.
//!
//! A request takes its slot only once it is complete (head and whatever body its route reads)
//! and keeps it until its reply is in, so a client that sends a head and then nothing, or holds
//! streams open without ending them, holds no slot. Beyond `server.max_in_flight` in all, or
//! `server.max_in_flight_per_client` from one IP address, a request gets a quick 503: one
//! client's slow requests cannot lock everyone else out.
//!
//! Per-client counts live in a fixed table of atomic counters indexed by a hash of the address
//! (no lock, no allocation, no map to grow or prune: two atomic operations per request). Two
//! addresses that share a counter share one budget, which only ever makes the limit stricter;
//! with [`TABLE`] counters that is rare, and keyed with a random seed per process, no client can
//! aim for another's counter.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Per-client counters.
const TABLE_BITS: u32 = 12;
/// Counters per table.
pub(crate) const TABLE: usize = 1 << TABLE_BITS;

/// The server's in-flight slots.
pub(crate) struct Slots {
    all: Arc<Semaphore>,
    per_client: u32,
    clients: Arc<[AtomicU32]>,
    hash: AddressHash,
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// `server.max_in_flight` requests are being handled.
    Server,
    /// `server.max_in_flight_per_client` requests of this client's address are.
    Client,
}

/// A request's slot, given back when dropped.
pub(crate) struct Slot {
    _all: OwnedSemaphorePermit,
    client: Option<(Arc<[AtomicU32]>, usize)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((clients, index)) = &self.client {
            clients[*index].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Slots {
    /// `max_in_flight` slots in all, `per_client` for one address (0: no per-client limit).
    pub(crate) fn new(max_in_flight: usize, per_client: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(max_in_flight)),
            per_client: u32::try_from(per_client).unwrap_or(u32::MAX),
            clients: (0..TABLE).map(|_| AtomicU32::new(0)).collect(),
            hash: AddressHash::new(),
        }
    }

    /// A slot for a request from `client` (unknown for an embedder's server that does not
    /// say), or why there is none.
    pub(crate) fn take(&self, client: Option<SocketAddr>) -> Result<Slot, Busy> {
        let all = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Server)?;
        let client = match client {
            Some(address) if self.per_client > 0 => {
                let index = self.index(address.ip());
                let counter = &self.clients[index];
                if counter.fetch_add(1, Ordering::Relaxed) >= self.per_client {
                    counter.fetch_sub(1, Ordering::Relaxed);
                    return Err(Busy::Client);
                }
                Some((self.clients.clone(), index))
            }
            _ => None,
        };
        Ok(Slot { _all: all, client })
    }

    fn index(&self, ip: IpAddr) -> usize {
        self.hash.index(ip)
    }
}

/// Which of [`TABLE`] counters an address uses: a keyed multiply-shift hash, random per
/// process, so that which addresses share a counter cannot be chosen from outside. SipHash
/// cost about 100 instructions of every request (by callgrind); this costs a few.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddressHash {
    /// The multiplier is odd.
    keys: (u64, u64),
}

impl AddressHash {
    /// A hash with keys from the standard library's per-process random seed.
    pub(crate) fn new() -> Self {
        let state = std::collections::hash_map::RandomState::new();
        let mut first = state.build_hasher();
        first.write_u8(0);
        let mut second = state.build_hasher();
        second.write_u8(1);
        Self {
            keys: (first.finish(), second.finish() | 1),
        }
    }

    /// The counter of `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub(crate) fn index(&self, ip: IpAddr) -> usize {
        let bits = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u64::from(u32::from(v4)),
                None => {
                    let bits = u128::from(v6);
                    (bits as u64) ^ ((bits >> 64) as u64)
                }
            },
        };
        let mixed = (bits ^ self.keys.0).wrapping_mul(self.keys.1);
        (mixed >> (64 - TABLE_BITS)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> Option<SocketAddr> {
        Some(text.parse().expect("a socket address"))
    }

    #[test]
    fn one_address_gets_its_share_and_no_more() {
        let slots = Slots::new(10, 3);
        let held: Vec<Slot> = (0..3)
            .map(|port| {
                slots
                    .take(peer(&format!("10.0.0.1:{}", 1000 + port)))
                    .unwrap()
            })
            .collect();
        assert_eq!(slots.take(peer("10.0.0.1:2000")).err(), Some(Busy::Client));
        // Another address still gets slots, up to the server's limit.
        let others: Vec<Slot> = (0..7)
            .filter_map(|_| slots.take(peer("10.0.0.2:1")).ok())
            .collect();
        assert_eq!(others.len(), 3);
        drop(held);
        assert!(slots.take(peer("10.0.0.1:2000")).is_ok());
    }

    #[test]
    fn the_server_limit_holds_for_everyone() {
        let slots = Slots::new(2, 0);
        let _a = slots.take(peer("10.0.0.1:1")).unwrap();
        let _b = slots.take(None).unwrap();
        assert_eq!(slots.take(peer("10.0.0.9:1")).err(), Some(Busy::Server));
    }

    #[test]
    fn a_refused_request_gives_its_counts_back() {
        let slots = Slots::new(1, 1);
        let held = slots.take(peer("10.0.0.1:1")).unwrap();
        assert_eq!(slots.take(peer("10.0.0.2:1")).err(), Some(Busy::Server));
        assert_eq!(slots.take(peer("10.0.0.1:1")).err(), Some(Busy::Server));
        drop(held);
        assert!(slots.take(peer("10.0.0.2:1")).is_ok());
    }

    #[test]
    fn an_ipv4_client_over_ipv6_is_the_same_client() {
        let slots = Slots::new(10, 1);
        let _held = slots.take(peer("10.0.0.2:1")).unwrap();
        assert_eq!(
            slots.take(peer("[::ffff:10.0.0.2]:1")).err(),
            Some(Busy::Client)
        );
    }
}
