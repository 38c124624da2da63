"""The cffi (ABI mode) binding of the host's ``pyhost_host_v2`` table.

Internal: plugins use :data:`pyhost.host`, which calls into a :class:`Binding` when running
inside the host. The C declarations are read from ``include/pyhost_host.h``, shipped in this
package, so the header stays the one description of the ABI.

A :class:`Binding` turns the table's function pointers into Python callables that take and
return plain ``str`` / ``bytes``, release every buffer the host fills (once, also when the call
fails) and raise :class:`~pyhost.errors.HostError` for a failed status. :func:`bind` accepts
any table address, which is how the tests run the binding against a table of ``ffi.callback``
functions, without the host.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from importlib import resources
from typing import Any, Final

from cffi import FFI

from .errors import HostError, Status, error_for_status

HEADER: Final = "pyhost_host.h"
"""The header's file name inside the package's ``include`` directory."""

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_INT_DEFINE = re.compile(r"#define\s+(\w+)\s+(-?(?:0[xX][0-9a-fA-F]+|\d+))[uUlL]*\s*")

# A byte view of `pyhost_buffer` (same layout, `char *` data) so that ffi.unpack returns bytes.
_PRIVATE_CDEF: Final = """
typedef struct { char *data; size_t len; size_t cap; } _pyhost_bytes_view;
"""


def header_text() -> str:
    """Return the text of the C header shipped with the package."""
    return resources.files(__package__).joinpath("include", HEADER).read_text(encoding="utf-8")


def cdef_from_header(text: str) -> tuple[str, dict[str, int]]:
    """Turn the header into a cffi ``cdef`` and its integer ``#define`` constants.

    Comments and preprocessor lines are dropped, except ``#define NAME <integer>``, which cffi
    accepts as it is and which is also returned in the mapping of constants.
    """
    lines = []
    constants: dict[str, int] = {}
    for line in _COMMENT.sub(" ", text).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            match = _INT_DEFINE.fullmatch(stripped)
            if match is not None:
                constants[match[1]] = int(match[2], 0)
                lines.append(stripped)
        elif stripped:
            lines.append(line.rstrip())
    return "\n".join(lines) + "\n", constants


CDEF, CONSTANTS = cdef_from_header(header_text())
"""The cdef built from the header, and the header's integer constants by name."""

ffi: Final = FFI()
ffi.cdef(CDEF)
ffi.cdef(_PRIVATE_CDEF)

ABI_VERSION: Final = CONSTANTS["PYHOST_HOST_ABI_VERSION"]
OK: Final = CONSTANTS["PYHOST_OK"]
NOT_FOUND: Final = CONSTANTS["PYHOST_NOT_FOUND"]
DENIED: Final = CONSTANTS["PYHOST_DENIED"]
ERROR: Final = CONSTANTS["PYHOST_ERROR"]
INVALID: Final = CONSTANTS["PYHOST_INVALID"]
NO_SUCH_FUNCTION: Final = CONSTANTS["PYHOST_NO_SUCH_FUNCTION"]

_mismatched = {
    status.name: CONSTANTS.get(f"PYHOST_{status.name}")
    for status in Status
    if CONSTANTS.get(f"PYHOST_{status.name}") != status.value
}
if _mismatched:
    raise ImportError(f"pyhost.errors.Status does not match {HEADER}: {_mismatched}")

_FUNCTIONS: Final = (
    "log",
    "settings",
    "secret",
    "kv_get",
    "kv_set",
    "kv_delete",
    "call",
    "free_buffer",
)


def _table_pointer(table: Any) -> Any:
    if isinstance(table, int):
        if table == 0:
            raise ImportError("the host's pyhost_host_v2 table address is NULL")
        return ffi.cast("pyhost_host_v2 *", table)
    if isinstance(table, ffi.CData):
        pointer = ffi.cast("pyhost_host_v2 *", table)
        if pointer == ffi.NULL:
            raise ImportError("the host's pyhost_host_v2 table pointer is NULL")
        return pointer
    raise TypeError(f"expected a table address or a cdata pointer, got {type(table).__name__}")


def _check_table(table: Any) -> None:
    if table.abi_version != ABI_VERSION:
        raise ImportError(
            f"the host offers pyhost host ABI version {table.abi_version}, but this pyhost SDK "
            f"speaks version {ABI_VERSION}; install the SDK version that matches the host"
        )
    expected = ffi.sizeof("pyhost_host_v2")
    if table.struct_size < expected:
        raise ImportError(
            f"the host's pyhost_host_v2 table is {table.struct_size} bytes, smaller than the "
            f"{expected} bytes of ABI version {ABI_VERSION}; the host and SDK do not match"
        )
    missing = [name for name in _FUNCTIONS if getattr(table, name) == ffi.NULL]
    if missing:
        raise ImportError(f"the host's pyhost_host_v2 table has NULL entries: {missing}")


def _failure(status: int, payload: bytes, operation: str) -> HostError:
    message = payload.decode("utf-8", "replace") or f"host {operation} failed"
    return error_for_status(status, message)


class Binding:
    """Python callables over one ``pyhost_host_v2`` table.

    Text arguments are ``str`` (sent as UTF-8), data arguments and results ``bytes``. No call
    names the calling plugin: the host acts for the plugin whose code runs on the calling
    thread. A status other than ``PYHOST_OK`` raises the
    matching :class:`~pyhost.errors.HostError` with the host's message, except ``kv_get``, which
    returns ``None`` for ``PYHOST_NOT_FOUND``.
    """

    __slots__ = (
        "call",
        "kv_delete",
        "kv_get",
        "kv_set",
        "log",
        "secret",
        "settings",
        "table",
    )

    table: Any
    """The bound ``pyhost_host_v2 *`` (keeps a cdata table given to :func:`bind` alive)."""
    log: Callable[[int, str, str, bytes], None]
    """``log(level, message, request_id, fields_json)``."""
    settings: Callable[[], bytes]
    """``settings()``: the calling plugin's settings as a JSON object."""
    secret: Callable[[str], bytes]
    """``secret(name)``: the secret's value."""
    kv_get: Callable[[str], bytes | None]
    """``kv_get(key)``: the value, or ``None`` when the key is not set."""
    kv_set: Callable[[str, bytes], None]
    """``kv_set(key, value)``."""
    kv_delete: Callable[[str], None]
    """``kv_delete(key)``."""
    call: Callable[[str, bytes], bytes]
    """``call(name, data_json)``: the function's result as JSON."""

    def __init__(self, table: Any) -> None:
        table = _table_pointer(table)
        _check_table(table)
        self.table = table

        # Everything a call needs is bound here once, as closure variables. Out-buffers are
        # reused from a pool: a call pops one (so concurrent and re-entrant calls never share
        # one), and puts it back once the host's bytes are copied out and released.
        #
        # Every call follows the same steps, written out in each function because a helper
        # call costs more than the rest of the Python side: encode the text arguments, take
        # an out-buffer, call, and if the host filled the buffer copy its bytes (through a
        # `char *` view, so ffi.unpack gives bytes) and release it, exactly once, in
        # `finally`; then reset it and return it to the pool, and map the status.
        pool: list[tuple[Any, Any]] = []
        pop = pool.pop
        push = pool.append
        new = ffi.new
        cast = ffi.cast
        # Read through the `char *` view, ffi.unpack always gives bytes; the stubs allow any of
        # its result types (bytes, str, list), so this says which one it is here.
        unpack = typing.cast("Callable[[Any, int], bytes]", ffi.unpack)
        null = ffi.NULL
        free = table.free_buffer
        c_log = table.log
        c_settings = table.settings
        c_secret = table.secret
        c_kv_get = table.kv_get
        c_kv_set = table.kv_set
        c_kv_delete = table.kv_delete
        c_call = table.call

        def new_slot() -> tuple[Any, Any]:
            out = new("pyhost_buffer *")
            return out, cast("_pyhost_bytes_view *", out)

        def invoke(function: Any, *args: Any) -> tuple[int, bytes]:
            try:
                out, view = pop()
            except IndexError:
                out, view = new_slot()
            status = function(*args, out)
            data = view.data
            if data:
                try:
                    payload = unpack(data, view.len)
                finally:
                    free(out)
                    out.data = null
            else:
                payload = b""
            push((out, view))
            return status, payload

        def log(level: int, message: str, request_id: str, fields: bytes) -> None:
            text = message.encode("utf-8", "backslashreplace")
            rid = request_id.encode()
            status, payload = invoke(
                c_log, level, text, len(text), rid, len(rid), fields, len(fields)
            )
            if status != OK:
                raise _failure(status, payload, "log")

        def settings() -> bytes:
            status, payload = invoke(c_settings)
            if status != OK:
                raise _failure(status, payload, "settings")
            return payload

        def secret(name: str) -> bytes:
            raw = name.encode()
            status, payload = invoke(c_secret, raw, len(raw))
            if status != OK:
                raise _failure(status, payload, "secret")
            return payload

        def kv_get(key: str) -> bytes | None:
            raw = key.encode()
            status, payload = invoke(c_kv_get, raw, len(raw))
            if status == OK:
                return payload
            if status == NOT_FOUND:
                return None
            raise _failure(status, payload, "kv_get")

        def kv_set(key: str, value: bytes) -> None:
            raw = key.encode()
            status, payload = invoke(c_kv_set, raw, len(raw), value, len(value))
            if status != OK:
                raise _failure(status, payload, "kv_set")

        def kv_delete(key: str) -> None:
            raw = key.encode()
            status, payload = invoke(c_kv_delete, raw, len(raw))
            if status != OK:
                raise _failure(status, payload, "kv_delete")

        def call(name: str, data_json: bytes) -> bytes:
            raw = name.encode()
            status, payload = invoke(c_call, raw, len(raw), data_json, len(data_json))
            if status != OK:
                raise _failure(status, payload, "call")
            return payload

        self.log = log
        self.settings = settings
        self.secret = secret
        self.kv_get = kv_get
        self.kv_set = kv_set
        self.kv_delete = kv_delete
        self.call = call


def bind(table: Any) -> Binding:
    """Bind the ``pyhost_host_v2`` table at ``table``: an address (``int``) or a cdata pointer.

    Raises :class:`ImportError` when the table is NULL, has NULL entries, or speaks another
    ABI version than this SDK.
    """
    return Binding(table)


def load() -> Binding:
    """Bind the table of the host this interpreter runs in (``_pyhost_host.abi_table()``)."""
    import _pyhost_host  # type: ignore[import-not-found]  # only exists inside the host

    return Binding(_pyhost_host.abi_table())
