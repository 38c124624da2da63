//! The listening sockets, bound by the supervisor and kept open for its whole life.
//!
//! `balance = "reuseport"` (the default) gives each worker slot a socket of its own, all
//! bound to one address with `SO_REUSEPORT`, so the kernel spreads new connections across the
//! slots by a hash of the client's address. A socket's accept queue lives as long as any
//! descriptor of it, and the supervisor holds one: when a worker dies or is replaced, the
//! connections queued on its slot wait for the next worker instead of being reset, which is
//! what loses requests when each worker binds its own socket. `balance = "shared"` gives every
//! slot the same socket: whichever worker is free accepts, which balances by load but lets an
//! idle server's first worker take most connections (scripts/balance.py measures both).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use pyhost_core::config::Balance;

/// The listen backlog, as tokio's `TcpListener::bind` uses for the single-process server.
const BACKLOG: i32 = 1024;

/// The sockets of every slot, and how to make one for a slot added later.
pub(crate) struct Sockets {
    balance: Balance,
    /// The address really bound (port 0 resolved), for every later socket.
    pub(crate) local: SocketAddr,
    shared: Option<Arc<TcpListener>>,
}

impl Sockets {
    /// Binds the first socket at `addr`.
    pub(crate) fn bind(
        addr: SocketAddr,
        balance: Balance,
    ) -> std::io::Result<(Self, Arc<TcpListener>)> {
        let first = Arc::new(listen(addr, balance == Balance::Reuseport)?);
        let local = first.local_addr()?;
        let shared = (balance == Balance::Shared).then(|| first.clone());
        Ok((
            Self {
                balance,
                local,
                shared,
            },
            first,
        ))
    }

    /// The socket for one more slot.
    pub(crate) fn next(&self) -> std::io::Result<Arc<TcpListener>> {
        match (&self.shared, self.balance) {
            (Some(shared), _) => Ok(shared.clone()),
            (None, _) => Ok(Arc::new(listen(self.local, true)?)),
        }
    }
}

fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
