//! Taking granted secrets out of the process environment once the host has read them.
//!
//! A secret left in the environment is readable by every plugin (`os.environ`,
//! `/proc/self/environ`) and inherited by every child process, whatever the grants say. So
//! each granted secret is removed from the C environment before the interpreter starts (the
//! interpreter copies `os.environ` from it), and the bytes of its entry are overwritten where
//! they lie: the process's initial environment block, which `/proc/self/environ` shows and
//! which removing the variable does not touch.

use std::ffi::{CStr, c_char};

unsafe extern "C" {
    /// The C environment (POSIX).
    static environ: *const *mut c_char;
}

/// The entry `NAME=value` of `name` in the C environment, if any.
fn entry(name: &str) -> Option<*mut c_char> {
    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated strings, read here at
    // start-up, before the interpreter starts, while nothing in this process changes it.
    unsafe {
        let mut cursor = environ;
        if cursor.is_null() {
            return None;
        }
        while !(*cursor).is_null() {
            let text = CStr::from_ptr(*cursor).to_bytes();
            if text.len() > name.len()
                && text.starts_with(name.as_bytes())
                && text[name.len()] == b'='
            {
                return Some(*cursor);
            }
            cursor = cursor.add(1);
        }
    }
    None
}

/// Removes `name` from the environment and overwrites its entry's bytes with zeros.
pub(super) fn remove(name: &str) {
    let found = entry(name);
    // SAFETY: called once at start-up, before the interpreter starts; the host's own threads
    // do not read the environment, and an embedding application starts the host before it
    // serves (see `Host::start`).
    unsafe { std::env::remove_var(name) };
    if let Some(pointer) = found {
        // SAFETY: `pointer` is the entry found above, a writable NUL-terminated string (the
        // initial environment block or a copy the C library made for `setenv`), no longer
        // referenced by `environ` after `remove_var`; its terminator is kept.
        unsafe {
            let length = CStr::from_ptr(pointer).to_bytes().len();
            std::ptr::write_bytes(pointer, 0, length);
        }
    }
}
