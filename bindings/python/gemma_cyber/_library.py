"""Finds and loads the C library, and declares the C functions the binding calls."""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import sys
import tempfile
import zipfile

_CORE = {"darwin": "libgemma_cyber.dylib", "win32": "gemma_cyber.dll"}.get(sys.platform, "libgemma_cyber.so")


class Options(ctypes.Structure):
    """``gemma_cyber_options`` as far as this binding knows it; later ABI versions only append,
    and ``struct_size`` tells the library where this copy ends."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("backend", ctypes.c_uint32),
        ("model_path", ctypes.c_char_p),
        ("model_data", ctypes.c_void_p),
        ("model_data_len", ctypes.c_size_t),
        ("threshold", ctypes.c_float),
        ("num_threads", ctypes.c_uint32),
        ("onnxruntime_library", ctypes.c_char_p),
        ("model_sha256", ctypes.c_void_p),
    ]


def _extract_from_zip(directory: str) -> str:
    """When the package is imported from a zip (Spark's ``--py-files wheel.whl``), the system
    loader cannot open the library inside it: copy every bundled library (core and plugins, which
    the core looks for in its own directory) to a private temporary directory, removed at exit."""
    loader = globals().get("__loader__")
    archive = getattr(loader, "archive", None)
    if archive is None:
        raise OSError(
            f"no {_CORE} in {directory}: install the package with `pip install ./bindings/python` "
            "after `cargo build --release`, or set GEMMA_CYBER_LIBRARY to the library's path"
        )
    prefix = os.path.relpath(directory, archive).replace(os.sep, "/") + "/"
    target = tempfile.mkdtemp(prefix="gemma_cyber-")
    atexit.register(shutil.rmtree, target, True)
    stem = _CORE.split(".")[0]
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            base = name[len(prefix):]
            if name.startswith(prefix) and "/" not in base and base.startswith(stem):
                with z.open(name) as src, open(os.path.join(target, base), "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return os.path.join(target, _CORE)


def library_path() -> str:
    """The core library this package loads: $GEMMA_CYBER_LIBRARY if set, else the bundled one."""
    override = os.environ.get("GEMMA_CYBER_LIBRARY")
    if override:
        return override
    directory = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(directory, _CORE)
    return path if os.path.isfile(path) else _extract_from_zip(directory)


def _load() -> ctypes.CDLL:
    # CDLL (not PyDLL): every call releases the GIL, so classify runs while other threads work.
    lib = ctypes.CDLL(library_path())
    c_status = ctypes.c_int
    handle = ctypes.c_void_p
    declarations = {
        "gemma_cyber_options_init": (None, [ctypes.POINTER(Options), ctypes.c_size_t]),
        "gemma_cyber_create": (c_status, [ctypes.POINTER(Options), ctypes.POINTER(handle)]),
        "gemma_cyber_classify": (
            c_status,
            [handle, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p],
        ),
        "gemma_cyber_destroy": (None, [handle]),
        "gemma_cyber_last_error": (ctypes.c_char_p, []),
        "gemma_cyber_active_backend": (ctypes.c_int, [handle]),
        "gemma_cyber_device_name": (ctypes.c_char_p, [handle]),
        "gemma_cyber_input_dim": (ctypes.c_size_t, [handle]),
        "gemma_cyber_version": (ctypes.c_char_p, []),
        "gemma_cyber_abi_version": (ctypes.c_uint32, []),
    }
    for name, (restype, argtypes) in declarations.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


lib = _load()
