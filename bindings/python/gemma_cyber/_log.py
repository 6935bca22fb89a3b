"""The library's messages: which backend started, why AUTO passed one over, plugins that cannot be
used. The C library never writes to stderr; it hands them to the callback set here (none by
default: silent)."""

from __future__ import annotations

import atexit
import ctypes
import enum
import threading
from typing import Callable, Optional, Union

from ._errors import invalid_argument
from ._library import lib


class LogLevel(enum.IntEnum):
    """How much a message matters (``gemma_cyber_log_level``)."""

    WARNING = 1
    """Something went wrong but the library carried on (e.g. a plugin file that cannot be used)."""
    INFO = 2
    """What the library decided (e.g. which backend AUTO picked, and why others were skipped)."""


_NativeCallback = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
lib.gemma_cyber_set_log_callback.restype = None
lib.gemma_cyber_set_log_callback.argtypes = [_NativeCallback, ctypes.c_void_p]

# The registered trampoline: ctypes frees its code when the object goes, so it is kept here for as
# long as the library may call it. Replaced under the lock; the library returns from the C call
# only once calls of the one it replaces have returned, so the old object may go then.
_registered: Optional[object] = None
_lock = threading.Lock()
# Whether this thread is inside the callback, where set_log_callback is refused: the library would
# keep calling the trampoline it is running, while this side dropped it (freeing its code).
_inside = threading.local()


def _level(value: int) -> Union[LogLevel, int]:
    try:
        return LogLevel(value)
    except ValueError:  # a level added by a newer library
        return value


def set_log_callback(callback: Optional[Callable[[LogLevel, str], None]]) -> None:
    """Sends the library's messages to ``callback(level, message)``; ``None`` turns them off.

    One callback per process; a later call replaces it. It may be called from any thread the
    library runs on, also several at once (ctypes takes the GIL for it), and must not call back
    into this package (``set_log_callback`` raises :class:`InvalidArgumentError` there). An
    exception it raises goes to :func:`sys.unraisablehook`, as for any ctypes callback; the
    library carries on. To route messages to :mod:`logging`::

        log = logging.getLogger("gemma_cyber")
        gemma_cyber.set_log_callback(
            lambda level, message: log.log(
                logging.WARNING if level == gemma_cyber.LogLevel.WARNING else logging.INFO, message
            )
        )
    """
    global _registered
    if getattr(_inside, "active", False):
        raise invalid_argument("set_log_callback called from inside the log callback")
    if callback is None:
        native = None
    else:
        if not callable(callback):
            raise invalid_argument(f"callback must be callable or None, not {type(callback).__name__}")

        def trampoline(_user_data: object, level: int, message: Optional[bytes]) -> None:
            _inside.active = True
            try:
                callback(_level(level), (message or b"").decode("utf-8", "replace"))
            finally:
                _inside.active = False

        native = _NativeCallback(trampoline)
    with _lock:
        lib.gemma_cyber_set_log_callback(native if native is not None else _NativeCallback(), None)
        _registered = native


@atexit.register
def _unregister() -> None:
    # The trampoline cannot run once the interpreter is gone: nothing may call it after exit.
    if _registered is not None:
        set_log_callback(None)
