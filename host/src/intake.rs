//! Request bodies on their way in: the bytes of the bodies being read, capped for the whole
//! server (`server.request_buffer`) and for one client address (a quarter of it).
//!
//! A body is read whole before its handler runs, up to its route's `body_limit`; without a
//! cap, what the bodies being read hold was bounded only by `max_connections` × `body_limit`
//! (4 GiB with the defaults) — slowly sent bodies, each waiting for its last byte until
//! `body_timeout`, could take that much. Each frame is charged as it arrives; a frame that
//! would pass a cap answers 503 and closes the connection, and the charge is released when
//! the body is complete (from then on the in-flight slots bound what requests hold). The
//! share per address keeps one client's slow uploads from refusing everyone else's.
//!
//! Cost: nothing for a request without a body; two atomic additions per frame for one with.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::slots::{AddressHash, TABLE};

/// What every body being read holds.
pub(crate) struct Intake {
    held: AtomicUsize,
    limit: usize,
    per_client: usize,
    clients: Box<[AtomicUsize]>,
    hash: AddressHash,
}

/// Which cap a frame would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The server's.
    Server,
    /// The client address's share.
    Client,
}

impl Intake {
    /// Bodies may hold `limit` bytes in all, a quarter of that from one address.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit,
            per_client: (limit / 4).max(1),
            clients: (0..TABLE).map(|_| AtomicUsize::new(0)).collect(),
            hash: AddressHash::new(),
        })
    }

    /// A charge for one body of at most `body_limit` bytes, from `client`, holding nothing yet.
    /// The caps it is held to are never below its own limit: a route that takes large bodies
    /// still gets one whole while the server is otherwise quiet.
    pub(crate) fn begin(self: &Arc<Self>, client: Option<IpAddr>, body_limit: usize) -> Charge {
        Charge {
            intake: self.clone(),
            client: client.map(|ip| self.hash.index(ip)),
            bytes: 0,
            limit: self.limit.max(body_limit),
            per_client: self.per_client.max(body_limit),
        }
    }
}

/// The bytes one body holds so far; released when dropped.
pub(crate) struct Charge {
    intake: Arc<Intake>,
    client: Option<usize>,
    bytes: usize,
    /// The server's cap and the address's share, for this body.
    limit: usize,
    per_client: usize,
}

impl Charge {
    /// Charges `bytes` more. A body that holds nothing yet is always let in, so that a cap
    /// smaller than one frame cannot make a body impossible.
    pub(crate) fn grow(&mut self, bytes: usize) -> Result<(), Full> {
        let intake = &self.intake;
        let before = intake.held.fetch_add(bytes, Ordering::Relaxed);
        if self.bytes > 0 && before.saturating_add(bytes) > self.limit {
            intake.held.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Full::Server);
        }
        if let Some(index) = self.client {
            let counter = &intake.clients[index];
            let before = counter.fetch_add(bytes, Ordering::Relaxed);
            if self.bytes > 0 && before.saturating_add(bytes) > self.per_client {
                counter.fetch_sub(bytes, Ordering::Relaxed);
                intake.held.fetch_sub(bytes, Ordering::Relaxed);
                return Err(Full::Client);
            }
        }
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.intake.held.fetch_sub(self.bytes, Ordering::Relaxed);
        if let Some(index) = self.client {
            self.intake.clients[index].fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("an address"))
    }

    #[test]
    fn bodies_share_the_server_and_each_address_its_quarter() {
        let intake = Intake::new(1000);
        let mut first = intake.begin(ip("10.0.0.1"), 100);
        first.grow(200).unwrap();
        assert_eq!(
            first.grow(100),
            Err(Full::Client),
            "past 250 from one address"
        );
        let mut second = intake.begin(ip("10.0.0.1"), 100);
        second.grow(10).unwrap();
        assert_eq!(second.grow(50), Err(Full::Client));
        drop((first, second));
        let mut bodies: Vec<Charge> = (1..=4)
            .map(|n| {
                let mut charge = intake.begin(ip(&format!("10.0.1.{n}")), 100);
                charge.grow(240).unwrap();
                charge
            })
            .collect();
        assert_eq!(bodies[0].grow(50), Err(Full::Server));
        bodies.clear();
        assert_eq!(intake.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_body_may_always_reach_its_own_limit_alone() {
        let intake = Intake::new(1000);
        let mut big = intake.begin(ip("10.0.0.1"), 5000);
        for _ in 0..50 {
            big.grow(100).unwrap();
        }
        let mut other = intake.begin(ip("10.0.0.2"), 100);
        other.grow(10).unwrap();
        assert_eq!(other.grow(10), Err(Full::Server));
    }
}
