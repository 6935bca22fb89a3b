"""The Classifier: a loaded model bound to a backend."""

from __future__ import annotations

import ctypes
import math
import os
import threading
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._errors import InvalidArgumentError, Status, error_for, invalid_argument
from ._library import Options, lib

_BACKENDS = {"auto": 0, "cpu": 1, "onnxruntime": 2, "wgpu": 3, "plugin": 4}
_BACKEND_NAMES = {value: name for name, value in _BACKENDS.items()}
_U32_MAX = 2**32 - 1


def _last_error(status: int) -> Exception:
    message = lib.gemma_cyber_last_error() or b""
    return error_for(status, message.decode("utf-8", "replace"))


def _text(field: str, value: Union[str, bytes, None]) -> Optional[bytes]:
    """``value`` as the NUL-terminated UTF-8 the C API reads; ``None`` stays NULL."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = value.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates have no UTF-8
            raise invalid_argument(f"{field} is not valid text: {e}") from None
    if not isinstance(value, bytes):
        raise invalid_argument(f"{field} must be text; got {value!r}")
    if b"\0" in value:
        raise invalid_argument(f"{field} contains a NUL byte")
    return value


def _sha256_bytes(model_sha256: Union[str, bytes, None]) -> Optional[bytes]:
    if model_sha256 is None:
        return None
    if isinstance(model_sha256, str):
        try:
            digest = bytes.fromhex(model_sha256.strip())
        except ValueError:
            raise invalid_argument("model_sha256 must be 64 hexadecimal digits or 32 bytes") from None
    elif isinstance(model_sha256, (bytes, bytearray, memoryview)):
        digest = bytes(model_sha256)
    else:
        raise invalid_argument("model_sha256 must be 64 hexadecimal digits or 32 bytes")
    if len(digest) != 32:
        raise invalid_argument(f"model_sha256 has {len(digest)} bytes; a SHA-256 has 32")
    return digest


def _path(field: str, value: Union[str, bytes, "os.PathLike[str]"]) -> bytes:
    """A path as the bytes the C API reads: the file system's encoding, as ``open`` uses."""
    try:
        path = os.fsencode(value)
    except TypeError:
        raise invalid_argument(f"{field} must be a path; got {value!r}") from None
    except UnicodeEncodeError as e:
        raise invalid_argument(f"{field} cannot be encoded as a path: {e}") from None
    checked = _text(field, path)  # refuses a NUL, as for any text the C API reads
    assert checked is not None
    return checked


def _model_bytes(value: Any) -> bytes:
    """A model file's bytes from any bytes-like object (bytes, bytearray, memoryview, mmap)."""
    if isinstance(value, str):
        raise invalid_argument("model_data must be the model file's bytes, not text; use model_path for a path")
    try:
        return memoryview(value).tobytes()
    except TypeError:
        raise invalid_argument(f"model_data must be bytes-like; got {type(value).__name__}") from None


def _as_rows(x: npt.ArrayLike) -> np.ndarray:
    """``x`` as a C-contiguous, aligned float32 2-D array: the same object when it already is one
    (no copy), converted from other real dtypes (float16, float64, integers) otherwise.

    Alignment matters as much as contiguity: the C API reads ``const float *``, and an array over
    a buffer at an odd address (``np.ndarray(..., buffer=memoryview(buf)[1:])``) is C-contiguous
    yet not aligned, which the library may not read correctly (and which is undefined in C)."""
    # Exactly an ndarray: a subclass may report a shape of its own that its data does not have
    # (the library would read past the end), so it is read through a plain ndarray view below.
    if (
        type(x) is np.ndarray
        and x.dtype == np.float32
        and x.ndim == 2
        and x.flags.c_contiguous
        and x.flags.aligned
    ):
        return x
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists, objects numpy cannot read
        raise invalid_argument(f"embeddings must be a 2-D array of numbers: {e}") from None
    if array.ndim != 2:
        raise invalid_argument(f"embeddings must be a 2-D array (rows x dim); got {array.ndim} dimension(s)")
    if array.dtype.kind not in "fiu":
        raise invalid_argument(f"embeddings must be numbers; got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: NON_FINITE_INPUT
        rows = np.ascontiguousarray(array, dtype=np.float32)
    # ascontiguousarray hands back a misaligned float32 array unchanged; a copy is aligned.
    return rows if rows.flags.aligned else rows.copy()


class Classifier:
    """A loaded model bound to a backend; classifies embeddings into cyber-related or not.

    One classifier may be shared by many threads: :meth:`classify` releases the GIL while the
    library works, so calls from several threads run at once. Use it as a context manager, or call
    :meth:`close` when done (closing while other threads still classify waits for none of them:
    the library is freed when the last running call returns).

    Args:
        backend: ``"auto"`` (a real GPU through wgpu, else ONNX Runtime if its library loads, else
            cpu), ``"cpu"``, ``"onnxruntime"``, ``"wgpu"``, or ``"plugin"`` with ``plugin_name``.
        model_path: a ``.safetensors`` model file; ``None``: the built-in model.
        model_data: the bytes of a ``.safetensors`` model already in memory (any bytes-like
            object), instead of ``model_path``.
        threshold: label = probability >= threshold, in [0, 1]; ``None``: the model's own.
        num_threads: threads a backend may use per call; 0: the library decides.
        model_sha256: refuse the model file unless it has this SHA-256 (64 hex digits or 32
            bytes); ``None``: not checked.
        plugin_name: with ``backend="plugin"``, the plugin to run (``libgemma_cyber_<name>.so``).
        plugin_dir: a directory searched first for plugins; ``None``: ``GEMMA_CYBER_PLUGIN_DIR``
            and the library's own directory (where this package bundles the wgpu and onnxruntime
            plugins).
        plugin_settings: ``"key=value"`` settings for plugins; a key prefixed with a plugin's name
            and a dot (``"wgpu.adapter=NVIDIA"``) reaches only that plugin.
        onnxruntime_library: ONNX Runtime's shared library for the onnxruntime backend;
            ``None``: ``GEMMA_CYBER_ONNXRUNTIME_LIB``, then the usual search.

    Raises:
        InvalidArgumentError, ModelNotFoundError, ModelInvalidError, BackendUnavailableError,
        BackendFailureError: what the library reports, with its status and message.
    """

    def __init__(
        self,
        backend: str = "auto",
        model_path: Union[str, "os.PathLike[str]", None] = None,
        threshold: Optional[float] = None,
        num_threads: int = 0,
        model_sha256: Union[str, bytes, None] = None,
        plugin_name: Optional[str] = None,
        plugin_dir: Union[str, "os.PathLike[str]", None] = None,
        plugin_settings: Optional[Sequence[str]] = None,
        model_data: Union[bytes, bytearray, memoryview, None] = None,
        onnxruntime_library: Union[str, "os.PathLike[str]", None] = None,
    ) -> None:
        if getattr(self, "_lock", None) is not None:
            # A second __init__ would drop the handle it holds without freeing it.
            raise invalid_argument("a Classifier is set up once; create another")
        self._handle: Optional[int] = None
        self._lock = threading.Lock()
        self._calls = 0  # classify calls running now; the last one out frees a closed classifier
        self._closed = False
        if not isinstance(backend, str) or backend not in _BACKENDS:
            raise invalid_argument(f"unknown backend {backend!r}; expected auto, cpu, onnxruntime, wgpu or plugin")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or not 0 <= num_threads <= _U32_MAX:
            raise invalid_argument(f"num_threads must be an integer in [0, {_U32_MAX}]; got {num_threads!r}")
        digest = _sha256_bytes(model_sha256)
        options = Options()
        lib.gemma_cyber_options_init(ctypes.byref(options), ctypes.sizeof(options))
        options.backend = _BACKENDS[backend]
        path = None if model_path is None else _path("model_path", model_path)
        options.model_path = path
        data = None  # kept alive through gemma_cyber_create, which copies it
        if model_data is not None:
            data = _model_bytes(model_data)
            # The bytes object's own buffer, never NULL: given but empty stays a real pointer of
            # length 0, which the library refuses as an empty model (NULL would mean "not given":
            # the built-in model).
            options.model_data = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p)
            options.model_data_len = len(data)
        options.onnxruntime_library = (
            None if onnxruntime_library is None else _path("onnxruntime_library", onnxruntime_library)
        )
        if threshold is not None:
            try:
                options.threshold = float(threshold)
            except (TypeError, ValueError, OverflowError):
                raise invalid_argument(f"threshold must be a number; got {threshold!r}") from None
            if math.isnan(options.threshold):
                raise invalid_argument("threshold is NaN; pass None for the model's own")
            # Checked here too, so the message names this binding's "model's own" (None), not the
            # C API's NaN.
            if not 0.0 <= options.threshold <= 1.0:  # as float32, as the C API checks it
                raise invalid_argument(f"threshold is {threshold!r}; expected a number in [0, 1], or None for the model's own")
        options.num_threads = num_threads
        sha_buffer = ctypes.create_string_buffer(digest, 32) if digest is not None else None
        options.model_sha256 = ctypes.cast(sha_buffer, ctypes.c_void_p) if sha_buffer is not None else None
        options.plugin_name = _text("plugin_name", plugin_name)
        options.plugin_dir = None if plugin_dir is None else _path("plugin_dir", plugin_dir)
        settings = None
        if plugin_settings is not None:
            if isinstance(plugin_settings, (str, bytes)) or not hasattr(plugin_settings, "__iter__"):
                raise invalid_argument("plugin_settings must be a sequence of 'key=value' strings")
            # A None entry would become the NULL that ends the C array, silently dropping every
            # later setting: refuse it like any other bad argument.
            encoded = []
            for index, setting in enumerate(plugin_settings):
                if setting is None:
                    raise invalid_argument(f"plugin_settings[{index}] is None; every entry must be a 'key=value' string")
                encoded.append(_text(f"plugin_settings[{index}]", setting))
            settings = (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)
            options.plugin_settings = ctypes.cast(settings, ctypes.POINTER(ctypes.c_char_p))
        handle = ctypes.c_void_p()
        status = lib.gemma_cyber_create(ctypes.byref(options), ctypes.byref(handle))
        if status != Status.OK:
            raise _last_error(status)
        self._handle = handle.value

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Without this, copy.copy made a second object over the same native handle, and each
        # freed it: a double free. The model and backend live in native memory, not in Python.
        raise invalid_argument("a Classifier cannot be copied or pickled; create one where it is needed")

    def __copy__(self) -> "Classifier":
        return self.__reduce_ex__(None)

    def __deepcopy__(self, memo: Any) -> "Classifier":
        return self.__reduce_ex__(None)

    def _acquire(self) -> int:
        with self._lock:
            if self._closed or self._handle is None:
                raise invalid_argument("the classifier is closed")
            self._calls += 1
            return self._handle

    def _release(self) -> None:
        with self._lock:
            self._calls -= 1
            free = self._closed and self._calls == 0
            handle, self._handle = (self._handle, None) if free else (None, self._handle)
        if handle is not None:
            lib.gemma_cyber_destroy(handle)

    def close(self) -> None:
        """Frees the model and backend. Safe to call twice; later calls to the classifier raise
        :class:`InvalidArgumentError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            free = self._calls == 0
            handle, self._handle = (self._handle, None) if free else (None, self._handle)
        if handle is not None:
            lib.gemma_cyber_destroy(handle)

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self.close()

    def _run(self, x: npt.ArrayLike, labels: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        # The width is checked before any copy or output is made: a broadcast or zero-width array
        # may declare terabytes of rows that converting, or the outputs, would try to allocate.
        if isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[0] > 0 and x.shape[1] != self.input_dim:
            raise error_for(
                Status.DIMENSION_MISMATCH,
                f"GEMMA_CYBER_STATUS_DIMENSION_MISMATCH: embeddings have dim {x.shape[1]} but the model expects {self.input_dim}",
            )
        rows = _as_rows(x)
        count, dim = rows.shape
        probabilities = np.empty(count, dtype=np.float32)
        label_bytes = np.empty(count, dtype=np.uint8) if labels else None
        handle = self._acquire()
        try:
            # The GIL is released for the length of this call (ctypes.CDLL).
            status = lib.gemma_cyber_classify(
                handle,
                rows.ctypes.data,
                count,
                dim,
                probabilities.ctypes.data,
                label_bytes.ctypes.data if label_bytes is not None else None,
            )
            if status != Status.OK:
                raise _last_error(status)
        finally:
            self._release()
        return probabilities, (label_bytes.view(np.bool_) if label_bytes is not None else None)

    def classify(self, x: npt.ArrayLike) -> np.ndarray:
        """Probabilities (float32, one per row) that each embedding is cyber-related.

        Args:
            x: a 2-D array-like, rows x :attr:`input_dim`. A C-contiguous float32 array is passed
                to the library without a copy; float16, float64 and integers are converted.

        Raises:
            InvalidArgumentError: not a 2-D array of numbers, or the classifier is closed.
            DimensionMismatchError: rows are not :attr:`input_dim` wide.
            NonFiniteInputError: NaN or infinity in ``x`` (nothing is returned).
            BackendFailureError: the backend failed while running.
        """
        return self._run(x, labels=False)[0]

    def classify_with_labels(self, x: npt.ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
        """Probabilities (float32) and labels (bool: probability >= threshold, True = cyber),
        one per row. Same arguments and errors as :meth:`classify`."""
        probabilities, labels = self._run(x, labels=True)
        assert labels is not None
        return probabilities, labels

    def _accessor(self, function: Any) -> Any:
        handle = self._acquire()
        try:
            return function(handle)
        finally:
            self._release()

    @property
    def input_dim(self) -> int:
        """The width every row must have (768 for the built-in model)."""
        return int(self._accessor(lib.gemma_cyber_input_dim))

    @property
    def backend(self) -> str:
        """The backend running the model: ``"cpu"``, ``"onnxruntime"`` or ``"wgpu"`` (never
        ``"auto"``), or ``"plugin"`` for a third-party plugin."""
        value = self._accessor(lib.gemma_cyber_active_backend)
        return _BACKEND_NAMES.get(value, "plugin")

    @property
    def device_name(self) -> str:
        """The device the model runs on, for people (e.g. the GPU adapter's name)."""
        return (self._accessor(lib.gemma_cyber_device_name) or b"").decode("utf-8", "replace")

    def __repr__(self) -> str:
        # Another thread may close it between the check and the reads: repr never raises.
        try:
            return f"<gemma_cyber.Classifier backend={self.backend!r} device={self.device_name!r}>"
        except InvalidArgumentError:
            return "<gemma_cyber.Classifier closed>"
