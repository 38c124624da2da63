//! The open-files limit: raised to the hard limit at start, since every connection is a file
//! descriptor and the usual soft limit (1,024) is far below what the server can hold.

use std::io;

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit in force now.
    pub now: u64,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

impl std::fmt::Display for FdLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hard = self
            .hard
            .map_or_else(|| "unlimited".to_owned(), |hard| hard.to_string());
        if self.before == self.now {
            write!(f, "{} (hard limit {hard})", self.now)
        } else {
            write!(
                f,
                "{} (raised from {} to the hard limit {hard})",
                self.now, self.before
            )
        }
    }
}

/// Reads the soft open-files limit.
pub fn current() -> io::Result<u64> {
    Ok(get()?.rlim_cur)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. With an unlimited hard limit the soft
/// one is left alone: the kernel caps a descriptor number at `nr_open` anyway, and asking for
/// more fails.
pub fn raise() -> io::Result<FdLimit> {
    let mut limit = get()?;
    let before = limit.rlim_cur;
    let hard = (limit.rlim_max != libc::RLIM_INFINITY).then_some(limit.rlim_max);
    if let Some(hard) = hard
        && before < hard
    {
        limit.rlim_cur = hard;
        // SAFETY: `limit` is a valid, initialised rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        before,
        now: get()?.rlim_cur,
        hard,
    })
}

fn get() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the kernel to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let limit = raise().expect("getrlimit and setrlimit work here");
        assert!(limit.now >= limit.before);
        if let Some(hard) = limit.hard {
            assert_eq!(limit.now, hard);
        }
        assert_eq!(current().ok(), Some(limit.now));
    }
}
