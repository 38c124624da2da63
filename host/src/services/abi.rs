//! The C table behind `pyhost_host.h` (ABI version 2), bound by the SDK with cffi.
//!
//! The functions are reached through pointers in [`TABLE`], never by symbol name, so no linker
//! flags are needed. cffi releases the GIL around each call but stays on the calling thread,
//! so the caller is the plugin the host is running there ([`super::identity`]); no function
//! takes it as an argument. Nothing here touches Python. Panics are caught at the boundary and
//! reported as PYHOST_ERROR.
//!
//! Compatibility: the SDK accepts exactly its own `abi_version`. Within a version the table
//! only grows: entries are appended, never removed, reordered or changed, and `struct_size`
//! tells an SDK how many the host has. Anything else is a new version.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{ServiceError, caller, identity, services};

/// `pyhost_buffer`: bytes allocated by the host, released with `free_buffer`.
#[repr(C)]
pub(crate) struct Buffer {
    data: *mut u8,
    len: usize,
    cap: usize,
}

type Status = i32;
const OK: Status = 0;

/// `pyhost_host_v2`.
#[repr(C)]
pub(crate) struct HostTable {
    abi_version: u32,
    struct_size: u32,
    log: unsafe extern "C" fn(
        i32,
        *const u8,
        usize,
        *const u8,
        usize,
        *const u8,
        usize,
        *mut Buffer,
    ) -> Status,
    settings: unsafe extern "C" fn(*mut Buffer) -> Status,
    secret: unsafe extern "C" fn(*const u8, usize, *mut Buffer) -> Status,
    kv_get: unsafe extern "C" fn(*const u8, usize, *mut Buffer) -> Status,
    kv_set: unsafe extern "C" fn(*const u8, usize, *const u8, usize, *mut Buffer) -> Status,
    kv_delete: unsafe extern "C" fn(*const u8, usize, *mut Buffer) -> Status,
    call: unsafe extern "C" fn(*const u8, usize, *const u8, usize, *mut Buffer) -> Status,
    free_buffer: unsafe extern "C" fn(*mut Buffer),
}

/// The table handed to Python (its address comes from `_pyhost_host.abi_table()`).
pub(crate) static TABLE: HostTable = HostTable {
    abi_version: 2,
    struct_size: std::mem::size_of::<HostTable>() as u32,
    log: host_log,
    settings: host_settings,
    secret: host_secret,
    kv_get: host_kv_get,
    kv_set: host_kv_set,
    kv_delete: host_kv_delete,
    call: host_call,
    free_buffer: host_free_buffer,
};

/// Borrows caller-owned input bytes.
///
/// # Safety
/// `data` must point to `len` readable bytes for the duration of the call (or `len` be 0).
unsafe fn input<'a>(data: *const u8, len: usize) -> &'a [u8] {
    if data.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller per the header's ownership rules.
        unsafe { std::slice::from_raw_parts(data, len) }
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String, ServiceError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| ServiceError::Invalid(format!("{what} is not valid UTF-8")))
}

/// Moves `bytes` into the caller's out-buffer (ownership passes to the caller).
///
/// # Safety
/// `out` must be null or point to a writable `pyhost_buffer`.
unsafe fn fill(out: *mut Buffer, bytes: Vec<u8>) {
    if out.is_null() {
        return;
    }
    let mut bytes = std::mem::ManuallyDrop::new(bytes);
    // SAFETY: `out` is writable per the caller; the Vec's parts are reassembled only in
    // host_free_buffer.
    unsafe {
        *out = Buffer {
            data: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        };
    }
}

/// Runs a service call, turning its outcome (or a panic) into a status and out-buffer.
///
/// # Safety
/// `out` as for [`fill`].
unsafe fn answer(out: *mut Buffer, call: impl FnOnce() -> Result<Vec<u8>, ServiceError>) -> Status {
    let outcome = catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(ServiceError::Failed(
            "the host panicked in a service call".to_owned(),
        ))
    });
    match outcome {
        Ok(bytes) => {
            // SAFETY: forwarded from the caller.
            unsafe { fill(out, bytes) };
            OK
        }
        Err(err) => {
            let status = err.status();
            if !matches!(err, ServiceError::NotFound) {
                // SAFETY: forwarded from the caller.
                unsafe { fill(out, err.to_string().into_bytes()) };
            }
            status
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn host_log(
    level: i32,
    message: *const u8,
    message_len: usize,
    request_id: *const u8,
    request_id_len: usize,
    fields: *const u8,
    fields_len: usize,
    out: *mut Buffer,
) -> Status {
    // SAFETY: the pointers follow the header's rules (caller-owned, valid for the call).
    unsafe {
        let message = input(message, message_len);
        let request_id = input(request_id, request_id_len);
        let fields = input(fields, fields_len);
        answer(out, || {
            services()?.log(
                identity::current(),
                level,
                &String::from_utf8_lossy(message),
                &String::from_utf8_lossy(request_id),
                &String::from_utf8_lossy(fields),
            )?;
            Ok(Vec::new())
        })
    }
}

unsafe extern "C" fn host_settings(out: *mut Buffer) -> Status {
    // SAFETY: `out` follows the header's rules.
    unsafe { answer(out, || services()?.settings(caller()?)) }
}

unsafe extern "C" fn host_secret(name: *const u8, name_len: usize, out: *mut Buffer) -> Status {
    // SAFETY: the pointers follow the header's rules.
    unsafe {
        let name = input(name, name_len);
        answer(out, || {
            services()?.secret(caller()?, &text(name, "secret name")?)
        })
    }
}

unsafe extern "C" fn host_kv_get(key: *const u8, key_len: usize, out: *mut Buffer) -> Status {
    // SAFETY: the pointers follow the header's rules.
    unsafe {
        let key = input(key, key_len);
        answer(out, || services()?.kv_get(caller()?, key))
    }
}

unsafe extern "C" fn host_kv_set(
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    out: *mut Buffer,
) -> Status {
    // SAFETY: the pointers follow the header's rules.
    unsafe {
        let key = input(key, key_len);
        let value = input(value, value_len);
        answer(out, || {
            services()?
                .kv_set(caller()?, key, value)
                .map(|()| Vec::new())
        })
    }
}

unsafe extern "C" fn host_kv_delete(key: *const u8, key_len: usize, out: *mut Buffer) -> Status {
    // SAFETY: the pointers follow the header's rules.
    unsafe {
        let key = input(key, key_len);
        answer(out, || {
            services()?.kv_delete(caller()?, key).map(|()| Vec::new())
        })
    }
}

unsafe extern "C" fn host_call(
    name: *const u8,
    name_len: usize,
    data: *const u8,
    data_len: usize,
    out: *mut Buffer,
) -> Status {
    // SAFETY: the pointers follow the header's rules.
    unsafe {
        let name = input(name, name_len);
        let data = input(data, data_len);
        answer(out, || {
            services()?.call(caller()?, &text(name, "function name")?, data)
        })
    }
}

unsafe extern "C" fn host_free_buffer(buffer: *mut Buffer) {
    if buffer.is_null() {
        return;
    }
    // SAFETY: a non-null buffer was filled by `fill` (or is empty with data == NULL); its
    // parts come from a Vec<u8> that was never freed, and data is reset so a second free is a
    // no-op.
    unsafe {
        let buffer = &mut *buffer;
        if !buffer.data.is_null() {
            drop(Vec::from_raw_parts(buffer.data, buffer.len, buffer.cap));
            buffer.data = std::ptr::null_mut();
            buffer.len = 0;
            buffer.cap = 0;
        }
    }
}
