"""Finds and loads the C library, and declares the C functions the binding calls."""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import shutil
import stat
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
        ("plugin_dir", ctypes.c_char_p),
        ("plugin_name", ctypes.c_char_p),
        ("plugin_settings", ctypes.POINTER(ctypes.c_char_p)),
    ]


def _extract_from_zip(directory: str) -> str:
    """When the package is imported from a zip (Spark's ``--py-files gemma_cyber.zip``), the
    system loader cannot open the library inside it: copy every bundled library (core and plugins,
    which the core looks for in its own directory) out once, into a directory of the temporary
    directory named after the user and the library's checksum, private to the user, and shared by
    every process that imports the same package (Spark's Python workers often exit without running
    atexit handlers, so per-process copies would pile up)."""
    loader = globals().get("__loader__")
    archive = getattr(loader, "archive", None)
    if archive is None:
        raise OSError(
            f"no {_CORE} in {directory}: install the package with `pip install ./bindings/python` "
            "after `cargo build --release`, or set GEMMA_CYBER_LIBRARY to the library's path"
        )
    prefix = os.path.relpath(directory, archive).replace(os.sep, "/") + "/"
    stem = _CORE.split(".")[0]
    with zipfile.ZipFile(archive) as z:
        members = [
            info
            for info in z.infolist()
            if info.filename.startswith(prefix)
            and "/" not in info.filename[len(prefix):]
            and info.filename[len(prefix):].startswith(stem)
        ]
        key = "-".join(f"{m.CRC:08x}{m.file_size:x}" for m in members)
        uid = os.getuid() if hasattr(os, "getuid") else 0
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        shared = os.path.join(tempfile.gettempdir(), f"gemma_cyber-{uid}-{digest}")

        def private_to_us(path: str) -> bool:
            info = os.lstat(path)
            return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077

        if os.path.isdir(shared) and private_to_us(shared):
            return os.path.join(shared, _CORE)
        staging = tempfile.mkdtemp(prefix=f"gemma_cyber-{uid}-{digest}.")  # mode 0o700
        for member in members:
            with z.open(member) as src, open(os.path.join(staging, member.filename[len(prefix):]), "wb") as dst:
                shutil.copyfileobj(src, dst)
    try:
        os.rename(staging, shared)  # atomic: other processes see all of it or nothing
        return os.path.join(shared, _CORE)
    except OSError:  # another process got there first, or the name is taken by someone else
        if os.path.isdir(shared) and private_to_us(shared):
            shutil.rmtree(staging, ignore_errors=True)
            return os.path.join(shared, _CORE)
        atexit.register(shutil.rmtree, staging, True)
        return os.path.join(staging, _CORE)


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
