"""Services the host offers to plugins: logging, settings, secrets, a key-value store, calls.

>>> from pyhost import host
>>> host.kv.set("greeting", "hello")
>>> host.kv.get("greeting")
b'hello'

:data:`host` works the same everywhere. Inside the pyhost binary it calls the host through the
C ABI (``include/pyhost_host.h``, bound in :mod:`pyhost._abi`), as the plugin whose handler is
running; the host checks every call against the capabilities the config grants that plugin.
Anywhere else (pytest, a REPL) it runs in-process, set up by :func:`pyhost.testing.configure`.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from ._context import current
from .errors import CapabilityError, HostError, Status, error_for_status

if TYPE_CHECKING:
    from types import ModuleType

    from ._abi import Binding

__all__ = [
    "CapabilityError",
    "EmbeddedHost",
    "Host",
    "HostError",
    "HostLogHandler",
    "InProcessHost",
    "KeyValue",
    "Status",
    "error_for_status",
    "host",
    "host_logging_handler",
]


# --- shared helpers -------------------------------------------------------------------------

_LEVELS: Final = logging.getLevelNamesMapping()


def _level(level: int | str) -> int:
    if type(level) is int:
        return level
    if isinstance(level, str):
        try:
            return _LEVELS[level.upper()]
        except KeyError:
            raise ValueError(
                f"unknown log level {level!r}; use a number or one of "
                "'debug', 'info', 'warning', 'error', 'critical'"
            ) from None
    if isinstance(level, int) and not isinstance(level, bool):
        return int(level)
    raise TypeError(f"log level must be an int or a level name, got {level!r}")


# Built once: json.dumps with any non-default option builds a new encoder on every call.
# Same output as json.dumps(data, separators=(",", ":")).
_encode_data = json.JSONEncoder(separators=(",", ":")).encode
# Values JSON cannot represent are logged as their repr rather than failing the log call.
_encode_fields = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=repr).encode


def _fields_json(fields: Mapping[str, Any]) -> bytes:
    if not fields:
        return b"{}"
    return _encode_fields(fields).encode()


def _dumps(data: Any) -> bytes:
    return _encode_data(data).encode()


def _loads(payload: bytes) -> Any:
    return json.loads(payload) if payload else None


def _as_bytes(value: bytes | str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"kv values must be bytes or str, got {type(value).__name__}")


def _copy_json(value: Any) -> Any:
    # A deep copy of decoded JSON (dicts, lists and immutable scalars).
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


def _settings_object(payload: bytes) -> dict[str, Any]:
    value = _loads(payload)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HostError(Status.ERROR, f"the host's settings are not a JSON object: {value!r}")
    return value


def _text_argument(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


# --- the API --------------------------------------------------------------------------------


class KeyValue(ABC):
    """The host's key-value store; every plugin has its own namespace.

    Needs the ``"kv"`` capability.
    """

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` if there is none."""

    @abstractmethod
    def set(self, key: str, value: bytes | str) -> None:
        """Store ``value`` (``str`` is stored as UTF-8) under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a key that is not set is not an error."""

    async def get_async(self, key: str) -> bytes | None:
        """:meth:`get` as an awaitable: inside the host it runs off the event loop (use it from
        ``async def`` handlers, where a slow disk would otherwise stall every request); the
        in-process host of :mod:`pyhost.testing` runs it directly."""
        return self.get(key)

    async def set_async(self, key: str, value: bytes | str) -> None:
        """:meth:`set` as an awaitable (off the event loop inside the host)."""
        self.set(key, value)

    async def delete_async(self, key: str) -> None:
        """:meth:`delete` as an awaitable (off the event loop inside the host)."""
        self.delete(key)


class Host(ABC):
    """Services the host offers to the calling plugin.

    Failures raise :class:`HostError`; a service the plugin's capabilities do not cover raises
    :class:`CapabilityError`. Logging and reading the plugin's own settings are always allowed.
    """

    kv: KeyValue
    """The key-value store (capability ``"kv"``)."""

    @abstractmethod
    def log(self, level: int | str, message: str, **fields: Any) -> None:
        """Write a record into the host's log, with the plugin's name and the request id.

        ``level`` is a number (``logging.INFO``) or a name (``"info"``); ``fields`` are extra
        structured fields (values JSON cannot represent are logged as their ``repr``).
        """

    @property
    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The plugin's ``settings`` table from the config (a fresh copy on every access)."""

    @abstractmethod
    def secret(self, name: str) -> str:
        """Return the secret ``name``; the plugin may read the secrets its config lists."""

    @abstractmethod
    def call(self, name: str, data: Any = None) -> Any:
        """Call the host function ``name`` with ``data``; both data and result are JSON.

        Needs the capability ``"call:NAME"`` (or ``"call:*"``).
        """

    @abstractmethod
    async def call_async(self, name: str, data: Any = None) -> Any:
        """Like :meth:`call`, awaited without blocking the loop: an async host function runs
        on the host's runtime, a plain one on a thread of the host's. Use it from ``async
        def`` handlers."""


# --- inside the host ------------------------------------------------------------------------


_T = TypeVar("_T")


class _AsyncKeyValueModule(Protocol):
    # The awaitable kv forms of the host's `_pyhost_host` module: each checks the grant when
    # called and returns an awaitable that does the work off the event loop.
    def kv_get_async(self, key: str, /) -> Awaitable[bytes | None]: ...

    def kv_set_async(self, key: str, value: bytes, /) -> Awaitable[None]: ...

    def kv_delete_async(self, key: str, /) -> Awaitable[None]: ...


def _key_type_error(key: object) -> TypeError:
    return TypeError(f"kv keys must be a str, got {type(key).__name__}")


class _EmbeddedKeyValue(KeyValue):
    __slots__ = ("_async", "_delete", "_errors", "_get", "_set")

    def __init__(self, binding: Binding) -> None:
        self._get = binding.kv_get
        self._set = binding.kv_set
        self._delete = binding.kv_delete
        # The host's module, when it offers the awaitable forms, and the error it raises.
        self._async: _AsyncKeyValueModule | None = None
        self._errors: tuple[type[BaseException], ...] = ()

    def get(self, key: str) -> bytes | None:
        if not isinstance(key, str):
            raise _key_type_error(key)
        return self._get(key)

    def set(self, key: str, value: bytes | str) -> None:
        if not isinstance(key, str):
            raise _key_type_error(key)
        self._set(key, _as_bytes(value))

    def delete(self, key: str) -> None:
        if not isinstance(key, str):
            raise _key_type_error(key)
        self._delete(key)

    async def get_async(self, key: str) -> bytes | None:
        if not isinstance(key, str):
            raise _key_type_error(key)
        module = self._async
        if module is None:
            return self.get(key)
        return await _off_loop(self._errors, module.kv_get_async, key)

    async def set_async(self, key: str, value: bytes | str) -> None:
        if not isinstance(key, str):
            raise _key_type_error(key)
        module = self._async
        if module is None:
            return self.set(key, value)
        await _off_loop(self._errors, module.kv_set_async, key, _as_bytes(value))

    async def delete_async(self, key: str) -> None:
        if not isinstance(key, str):
            raise _key_type_error(key)
        module = self._async
        if module is None:
            return self.delete(key)
        await _off_loop(self._errors, module.kv_delete_async, key)


async def _off_loop(
    errors: tuple[type[BaseException], ...], start: Callable[..., Awaitable[_T]], *args: Any
) -> _T:
    # The host checks the grant when the call starts and runs it on one of its threads.
    try:
        return await start(*args)
    except errors as exc:
        raise _from_call_error(exc) from None


def _from_call_error(exc: BaseException) -> HostError:
    # `_pyhost_host.HostCallError(status, message)`; read attributes when it has them.
    args = exc.args
    status = getattr(exc, "status", args[0] if args else Status.ERROR)
    message = getattr(exc, "message", args[1] if len(args) > 1 else "")
    return error_for_status(int(status), str(message) or "the host call failed")


class EmbeddedHost(Host):
    """The host services of the pyhost binary, called through a :class:`~pyhost._abi.Binding`.

    No call names the calling plugin: the host acts for the plugin whose code is running.
    ``call_async`` is ``_pyhost_host.call_async`` (a coroutine function taking the function
    name and the JSON data) and ``call_error`` the exception it raises,
    ``_pyhost_host.HostCallError``; :meth:`from_module` takes both from the host's module.
    """

    kv: _EmbeddedKeyValue

    def __init__(
        self,
        binding: Binding,
        *,
        call_async: Callable[[str, bytes], Awaitable[bytes]] | None = None,
        call_error: type[BaseException] | None = None,
    ) -> None:
        self.binding = binding
        self.kv = _EmbeddedKeyValue(binding)
        self._log = binding.log
        self._secret = binding.secret
        self._call = binding.call
        self._call_async = call_async
        self._call_errors: tuple[type[BaseException], ...] = (
            () if call_error is None else (call_error,)
        )
        self._settings: Callable[[], dict[str, Any]] = lambda: _settings_object(binding.settings())
        self._fast_call: Callable[[str, Any], Any] | None = None

    @classmethod
    def from_module(cls, module: ModuleType) -> EmbeddedHost:
        """Bind the host behind ``module`` (the host's built-in ``_pyhost_host``).

        Every service goes through the C table, except the calls a handler may make many
        times per request (``kv.get``, ``call``, ``log``, ``settings``): when the module offers
        them as built-in functions, those skip the cffi round trip (about a microsecond each).
        The awaitable forms (``kv.get_async``, ...) are the module's.
        """
        # Imported here: loading cffi and parsing the header is start-up time that code outside
        # the host (tests, a REPL) never needs.
        from ._abi import bind

        embedded = cls(
            bind(module.abi_table()),
            call_async=module.call_async,
            call_error=module.HostCallError,
        )
        if all(hasattr(module, name) for name in ("kv_get", "call", "log", "settings")):
            embedded._use_builtins(module)
        if all(hasattr(module, f"kv_{name}_async") for name in ("get", "set", "delete")):
            embedded.kv._async = module
            embedded.kv._errors = embedded._call_errors
        return embedded

    def _use_builtins(self, module: ModuleType) -> None:
        errors = self._call_errors
        # The module's built-ins, with the types the host gives them.
        kv_get: Callable[[str], bytes | None] = module.kv_get
        call: Callable[[str, Any], Any] = module.call
        log: Callable[[int, str, str, str], None] = module.log
        settings: Callable[[], dict[str, Any]] = module.settings

        def fast_get(key: str) -> bytes | None:
            try:
                return kv_get(key)
            except errors as exc:
                raise _from_call_error(exc) from None

        def fast_call(name: str, data: Any) -> Any:
            try:
                return call(name, data)
            except errors as exc:
                raise _from_call_error(exc) from None

        def fast_log(level: int, message: str, request_id: str, fields: bytes) -> None:
            try:
                log(level, message, request_id, fields.decode())
            except errors as exc:
                raise _from_call_error(exc) from None

        def fast_settings() -> dict[str, Any]:
            # The config's settings table, as new objects on every call.
            try:
                return settings()
            except errors as exc:
                raise _from_call_error(exc) from None

        self.kv._get = fast_get
        self._log = fast_log
        self._fast_call = fast_call
        self._settings = fast_settings

    def log(self, level: int | str, message: str, **fields: Any) -> None:
        """See :meth:`Host.log`."""
        if type(message) is not str:
            message = str(message)
        self._log(_level(level), message, current.get().request_id, _fields_json(fields))

    @property
    def settings(self) -> dict[str, Any]:
        """See :attr:`Host.settings`; the host builds a fresh copy on every access."""
        return self._settings()

    def secret(self, name: str) -> str:
        """See :meth:`Host.secret`."""
        name = _text_argument(name, "secret names")
        return self._secret(name).decode()

    def call(self, name: str, data: Any = None) -> Any:
        """See :meth:`Host.call`."""
        name = _text_argument(name, "function names")
        if self._fast_call is not None:
            return self._fast_call(name, data)
        return _loads(self._call(name, _dumps(data)))

    async def call_async(self, name: str, data: Any = None) -> Any:
        """See :meth:`Host.call_async`."""
        name = _text_argument(name, "function names")
        body = _dumps(data)
        call_async = self._call_async
        if call_async is None:
            raise HostError(Status.ERROR, "this host offers no async host functions")
        try:
            payload = await call_async(name, body)
        except self._call_errors as exc:
            raise _from_call_error(exc) from None
        return _loads(payload)


# --- outside the host -----------------------------------------------------------------------

IN_PROCESS_PLUGIN: Final = "app"
"""The plugin name the in-process host reports in its messages."""

_CAPABILITIES: Final = frozenset({"kv", "call:*"})
_logger = logging.getLogger("pyhost.host")


def _quoted(name: str) -> str:
    # Names in messages are quoted the way the host quotes them (Rust's `{:?}`).
    return json.dumps(name, ensure_ascii=False)


def _capability_set(capabilities: Iterable[str] | None) -> frozenset[str] | None:
    if capabilities is None:
        return None
    if isinstance(capabilities, str):
        raise TypeError(f"capabilities must be a list of names, not the string {capabilities!r}")
    names = frozenset(capabilities)
    for name in names:
        if not isinstance(name, str) or not (
            name in _CAPABILITIES or (name.startswith("call:") and len(name) > len("call:"))
        ):
            hint = " (secrets are granted by name: pass secrets=...)" if name == "secrets" else ""
            raise ValueError(
                f'unknown capability {name!r}; expected "kv", "call:NAME" or "call:*"{hint}'
            )
    return names


class _InProcessKeyValue(KeyValue):
    __slots__ = ("_host",)

    def __init__(self, host: InProcessHost) -> None:
        self._host = host

    def get(self, key: str) -> bytes | None:
        self._host._require("kv")
        return self._host.store.get(_text_argument(key, "kv keys"))

    def set(self, key: str, value: bytes | str) -> None:
        self._host._require("kv")
        self._host.store[_text_argument(key, "kv keys")] = _as_bytes(value)

    def delete(self, key: str) -> None:
        self._host._require("kv")
        self._host.store.pop(_text_argument(key, "kv keys"), None)


class InProcessHost(Host):
    """Host services without the host, for tests and the REPL (see :mod:`pyhost.testing`).

    It behaves like the host for plugin ``"app"``: the same checks with the host's messages,
    data to and from host functions passed through JSON, a dict (:attr:`store`) as the
    key-value store, and :meth:`log` writing to the ``pyhost.host`` logger (the record carries
    ``plugin``, ``request_id`` and ``fields`` attributes).

    ``secrets`` maps the secrets the plugin may read to their values; ``None`` grants every
    name and reads it from the environment, as the host does at start-up. ``capabilities``
    takes the config's names (``"kv"``, ``"call:NAME"``, ``"call:*"``), ``None`` granting
    everything. ``functions`` map names to plain callables ``f(data) -> result`` (for
    :meth:`call`), ``async_functions`` to coroutine functions (for :meth:`call_async`). A
    function may raise :class:`HostError` to fail the way a host function does; any other
    exception becomes a ``PYHOST_ERROR``.
    """

    store: dict[str, bytes]
    """The key-value store's contents."""

    def __init__(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        functions: Mapping[str, Callable[[Any], Any]] | None = None,
        async_functions: Mapping[str, Callable[[Any], Awaitable[Any]]] | None = None,
        capabilities: Iterable[str] | None = None,
    ) -> None:
        # Settings go through JSON as they do in the host, which also copies them.
        self._settings = _settings_object(_dumps(dict(settings or {})))
        self._secrets = None if secrets is None else dict(secrets)
        self._functions = dict(functions or {})
        self._async_functions = dict(async_functions or {})
        self._capabilities = _capability_set(capabilities)
        self.store = {}
        self.kv = _InProcessKeyValue(self)

    def _require(self, capability: str, *alternatives: str) -> None:
        granted = self._capabilities
        if granted is None or capability in granted or any(a in granted for a in alternatives):
            return
        raise CapabilityError(
            Status.DENIED,
            f"capability {_quoted(capability)} is not granted to plugin "
            f"{_quoted(IN_PROCESS_PLUGIN)}; add {_quoted(capability)} to "
            f"{IN_PROCESS_PLUGIN}.capabilities in the config file",
        )

    def log(self, level: int | str, message: str, **fields: Any) -> None:
        """See :meth:`Host.log`; writes to the ``pyhost.host`` logger."""
        level = _level(level)
        if _logger.isEnabledFor(level):
            extra = {
                "plugin": IN_PROCESS_PLUGIN,
                "request_id": current.get().request_id,
                "fields": json.loads(_fields_json(fields)),
            }
            _logger.log(level, "%s", message, extra=extra)

    @property
    def settings(self) -> dict[str, Any]:
        """See :attr:`Host.settings`."""
        return {key: _copy_json(value) for key, value in self._settings.items()}

    def secret(self, name: str) -> str:
        """See :meth:`Host.secret`."""
        name = _text_argument(name, "secret names")
        value = (os.environ if self._secrets is None else self._secrets).get(name)
        if value is None:
            detail = (
                f": the environment variable {name} is not set"
                if self._secrets is None
                else f"; add {_quoted(name)} to {IN_PROCESS_PLUGIN}.secrets in the config file"
            )
            raise CapabilityError(
                Status.DENIED,
                f"secret {_quoted(name)} is not granted to plugin "
                f"{_quoted(IN_PROCESS_PLUGIN)}{detail}",
            )
        return value

    def _function(self, name: str, registry: Mapping[str, Callable[[Any], Any]]) -> Any:
        self._require(f"call:{name}", "call:*")
        function = registry.get(name)
        if function is None:
            message = f"no host function named {_quoted(name)} is registered"
            if registry is self._functions and name in self._async_functions:
                message += " (it is async: use host.call_async)"
            elif registry is self._async_functions and name in self._functions:
                message += " (it is not async: use host.call)"
            raise HostError(Status.NO_SUCH_FUNCTION, message)
        return function

    def call(self, name: str, data: Any = None) -> Any:
        """See :meth:`Host.call`."""
        name = _text_argument(name, "function names")
        body = _dumps(data)
        function = self._function(name, self._functions)
        try:
            result = function(_loads(body))
        except HostError:
            raise
        except Exception as exc:
            raise HostError(
                Status.ERROR,
                f"host function {_quoted(name)} failed: {type(exc).__name__}: {exc}",
            ) from exc
        return _loads(_dumps(result))

    async def call_async(self, name: str, data: Any = None) -> Any:
        """See :meth:`Host.call_async`."""
        name = _text_argument(name, "function names")
        body = _dumps(data)
        function = self._function(name, self._async_functions)
        try:
            result = function(_loads(body))
            if inspect.isawaitable(result):
                result = await result
        except HostError:
            raise
        except Exception as exc:
            raise HostError(
                Status.ERROR,
                f"host function {_quoted(name)} failed: {type(exc).__name__}: {exc}",
            ) from exc
        return _loads(_dumps(result))


# --- the module-level host ------------------------------------------------------------------


def _default_implementation() -> Host:
    try:
        import _pyhost_host  # type: ignore[import-not-found]  # only exists inside the host
    except ImportError:
        return InProcessHost()
    return EmbeddedHost.from_module(_pyhost_host)


class _SelectedKeyValue(KeyValue):
    __slots__ = ("_host",)

    def __init__(self, host: _SelectedHost) -> None:
        self._host = host

    def get(self, key: str) -> bytes | None:
        return (self._host._impl or self._host.implementation).kv.get(key)

    def set(self, key: str, value: bytes | str) -> None:
        (self._host._impl or self._host.implementation).kv.set(key, value)

    def delete(self, key: str) -> None:
        (self._host._impl or self._host.implementation).kv.delete(key)

    async def get_async(self, key: str) -> bytes | None:
        return await (self._host._impl or self._host.implementation).kv.get_async(key)

    async def set_async(self, key: str, value: bytes | str) -> None:
        await (self._host._impl or self._host.implementation).kv.set_async(key, value)

    async def delete_async(self, key: str) -> None:
        await (self._host._impl or self._host.implementation).kv.delete_async(key)


class _SelectedHost(Host):
    """:data:`host`: forwards to the host's services inside the host, in-process otherwise.

    The choice is made on first use (so importing :mod:`pyhost` never touches the ABI), and
    :func:`pyhost.testing.configure` replaces it. Since this object only forwards, references
    to it and to its methods (``kv = host.kv``) follow the replacement.
    """

    def __init__(self) -> None:
        self._impl: Host | None = None
        self._lock = threading.Lock()
        self.kv = _SelectedKeyValue(self)

    @property
    def implementation(self) -> Host:
        """The implementation in use, chosen now if it has not been yet."""
        impl = self._impl
        if impl is None:
            with self._lock:
                impl = self._impl
                if impl is None:
                    impl = self._impl = _default_implementation()
        return impl

    def _install(self, impl: Host | None) -> None:
        # Used by pyhost.testing; None goes back to choosing on first use.
        with self._lock:
            self._impl = impl

    def log(self, level: int | str, message: str, **fields: Any) -> None:
        """See :meth:`Host.log`."""
        (self._impl or self.implementation).log(level, message, **fields)

    @property
    def settings(self) -> dict[str, Any]:
        """See :attr:`Host.settings`."""
        return (self._impl or self.implementation).settings

    def secret(self, name: str) -> str:
        """See :meth:`Host.secret`."""
        return (self._impl or self.implementation).secret(name)

    def call(self, name: str, data: Any = None) -> Any:
        """See :meth:`Host.call`."""
        return (self._impl or self.implementation).call(name, data)

    async def call_async(self, name: str, data: Any = None) -> Any:
        """See :meth:`Host.call_async`."""
        return await (self._impl or self.implementation).call_async(name, data)

    def __repr__(self) -> str:
        impl = self._impl
        chosen = "not chosen yet" if impl is None else type(impl).__name__
        return f"<pyhost host ({chosen})>"


_selected = _SelectedHost()
host: Host = _selected
"""The host's services for the calling plugin (see the module docstring)."""


# --- logging --------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }
    if fields:
        try:
            json.dumps(fields)
        except (TypeError, ValueError):
            fields = {key: value for key, value in fields.items() if _is_json(value)}
    return fields


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# Set while a handler forwards a record on this thread: whatever is logged meanwhile (by the
# host service itself, say) is not forwarded again, by this handler or any other.
_forwarding = threading.local()


class HostLogHandler(logging.Handler):
    """A :class:`logging.Handler` that writes records into the host's log via ``host.log``.

    The record's level, its formatted message (with the traceback, if any) and its ``extra``
    fields that JSON can represent are forwarded, together with a ``logger`` field naming the
    logger. Records logged on the same thread while a record is being forwarded (by the host
    service itself, say), and records of the ``pyhost.host`` logger (where the in-process host
    writes), are not forwarded, so the handler never feeds itself.
    """

    def __init__(self, level: int | str = logging.NOTSET, *, target: Host | None = None) -> None:
        super().__init__(level)
        self.target = host if target is None else target

    def emit(self, record: logging.LogRecord) -> None:
        """Forward ``record`` to the host's log."""
        local = _forwarding
        if record.name == _logger.name or getattr(local, "busy", False):
            return
        local.busy = True
        try:
            message = self.format(record)
            fields = {"logger": record.name, **_extra_fields(record)}
            self.target.log(record.levelno, message, **fields)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
        finally:
            local.busy = False


def host_logging_handler(level: int | str = logging.NOTSET) -> logging.Handler:
    """Return a handler forwarding :mod:`logging` records to the host's log (see
    :class:`HostLogHandler`); the host installs one on the root logger at start-up."""
    return HostLogHandler(level)
