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
//!
//! A slot with no ready worker (its worker died and the next is starting, or backing off
//! after failed starts) would still get its share of new connections, which would wait until
//! a worker comes. So while any slot is down, the supervisor attaches a classic BPF program to
//! the group (`SO_ATTACH_REUSEPORT_CBPF`) that sends each new connection to a slot that is up,
//! picked at random; with every slot up it detaches it and the kernel's hash applies again.
//! Connections that were already queued on a slot when it went down stay there for its next
//! worker.

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

/// `SO_ATTACH_REUSEPORT_CBPF` and `SO_DETACH_REUSEPORT_BPF` (asm-generic/socket.h, the values
/// of every Linux architecture but a few old ones; the libc crate names them only for Android).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

impl Sockets {
    /// Sends new connections only to the sockets at `live` (indices in the group, which is the
    /// order the sockets were bound in), out of `total`. Nothing to do with a shared socket.
    pub(crate) fn steer(&self, group: &TcpListener, live: &[usize], total: usize) {
        if self.shared.is_some() {
            return;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(group);
        if live.is_empty() || live.len() == total {
            // The kernel takes no value but wants an int's worth of one.
            let unused: libc::c_int = 0;
            // SAFETY: a setsockopt on a socket this process owns, its value a live int;
            // failing with ENOENT when no program is attached is expected.
            let result = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    SO_DETACH_REUSEPORT_BPF,
                    std::ptr::from_ref(&unused).cast(),
                    u32::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
                )
            };
            let error = std::io::Error::last_os_error();
            if result != 0 && error.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!("cannot stop steering connections: {error}");
            }
            return;
        }
        if let Err(err) = attach(fd, &mut steering_program(live)) {
            tracing::warn!("cannot steer connections away from slots without a worker: {err}");
        }
    }
}

/// Attaches `program` to the reuseport group of socket `fd`.
fn attach(fd: std::os::fd::RawFd, program: &mut [libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(u16::MAX),
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, alive for the call, of the length it states; the
    // kernel copies the program.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&fprog).cast(),
            u32::try_from(std::mem::size_of::<libc::sock_fprog>()).unwrap_or(u32::MAX),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A classic BPF program returning one of `live` at random: `A = random % n`, then a jump
/// table. Two instructions per live slot, within the 4,096 a program may have for up to
/// 2,047 slots (`Workers::MAX` is 1,024).
fn steering_program(live: &[usize]) -> Vec<libc::sock_filter> {
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: u16::try_from(code).unwrap_or_default(),
        jt,
        jf,
        k,
    };
    let index = |slot: usize| u32::try_from(slot).unwrap_or(u32::MAX);
    let count = u32::try_from(live.len()).unwrap_or(u32::MAX);
    let mut program = vec![
        op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            u32::from_ne_bytes((libc::SKF_AD_OFF + libc::SKF_AD_RANDOM).to_ne_bytes()),
            0,
            0,
        ),
        op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, count, 0, 0),
    ];
    let (last, rest) = live.split_last().unwrap_or((&0, &[]));
    for (position, &slot) in rest.iter().enumerate() {
        program.push(op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            index(position),
            0,
            1,
        ));
        program.push(op(libc::BPF_RET | libc::BPF_K, index(slot), 0, 0));
    }
    program.push(op(libc::BPF_RET | libc::BPF_K, index(*last), 0, 0));
    program
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a steering program the way the kernel would for a given random number.
    fn run(program: &[libc::sock_filter], random: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0usize;
        loop {
            let op = &program[pc];
            let code = u32::from(op.code);
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = random,
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= op.k,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == op.k { op.jt } else { op.jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return op.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn the_program_picks_only_live_slots_and_each_of_them() {
        let live = [0, 2, 3, 7];
        let program = steering_program(&live);
        let picked: std::collections::BTreeSet<u32> = (0..64).map(|r| run(&program, r)).collect();
        assert_eq!(picked, [0, 2, 3, 7].into_iter().collect());
        assert_eq!(steering_program(&[5]).len(), 3);
        assert!(steering_program(&(0..1024).collect::<Vec<_>>()).len() <= 4096);
    }

    #[test]
    fn a_group_accepts_the_program() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (sockets, first) = Sockets::bind(addr, Balance::Reuseport).unwrap();
        let _second = sockets.next().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*first);
        attach(fd, &mut steering_program(&[1])).unwrap();
    }
}
