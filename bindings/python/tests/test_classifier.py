"""The Python binding against the real library: results, conversions, and every bad input."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess

import numpy as np
import pytest

import gemma_cyber
from gemma_cyber import Status
from gemma_cyber._classifier import _as_rows

from conftest import TOLERANCE


def test_version_is_the_librarys_and_the_packages():
    import importlib.metadata

    assert gemma_cyber.__version__ == gemma_cyber.version() == importlib.metadata.version("gemma-cyber")
    assert gemma_cyber.abi_version() == 1


def test_library_is_bundled_with_its_plugins():
    library = pathlib.Path(gemma_cyber.library_path())
    package = pathlib.Path(gemma_cyber.__file__).parent
    assert library.parent == package, "the installed package must load its own copy of the library"


def test_builtin_model_matches_golden_probabilities_and_labels(golden):
    inputs, expected, labels = golden
    with gemma_cyber.Classifier(backend="cpu") as classifier:
        assert classifier.input_dim == 768
        assert classifier.backend == "cpu"
        probabilities = classifier.classify(inputs)
        both = classifier.classify_with_labels(inputs)
    assert probabilities.dtype == np.float32 and probabilities.shape == (64,)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(both[0], probabilities)
    assert both[1].dtype == np.bool_
    np.testing.assert_array_equal(both[1], labels)


def test_threshold_decides_labels(golden):
    inputs = golden[0]
    for threshold in (0.0, 0.25, 0.9, 1.0):
        with gemma_cyber.Classifier(backend="cpu", threshold=threshold) as classifier:
            probabilities, labels = classifier.classify_with_labels(inputs)
        np.testing.assert_array_equal(labels, probabilities >= np.float32(threshold))


def test_float32_c_contiguous_is_passed_without_a_copy(rows):
    assert _as_rows(rows) is rows
    assert _as_rows(rows[:, :]) is not rows  # a view is fine too, as long as no data is copied
    assert np.shares_memory(_as_rows(rows[:10]), rows)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_are_converted(golden, dtype):
    inputs = golden[0].astype(dtype)
    with gemma_cyber.Classifier(backend="cpu") as classifier:
        converted = classifier.classify(inputs)
        reference = classifier.classify(inputs.astype(np.float32))
    np.testing.assert_array_equal(converted, reference)


def test_lists_and_non_contiguous_arrays_give_the_same_result(golden):
    inputs = golden[0]
    with gemma_cyber.Classifier(backend="cpu") as classifier:
        reference = classifier.classify(inputs)
        np.testing.assert_array_equal(classifier.classify(inputs.tolist()), reference)
        np.testing.assert_array_equal(classifier.classify(np.asfortranarray(inputs)), reference)
        doubled = np.repeat(inputs, 2, axis=0)
        np.testing.assert_array_equal(classifier.classify(doubled[::2]), reference)


def test_a_misaligned_float32_array_is_copied_and_gives_the_same_result(golden):
    inputs = golden[0]
    # C-contiguous float32 over a buffer one byte past an aligned start: contiguous, not aligned.
    buffer = bytearray(inputs.nbytes + 1)
    misaligned = np.ndarray(inputs.shape, dtype=np.float32, buffer=memoryview(buffer)[1:])
    misaligned[...] = inputs
    assert misaligned.flags.c_contiguous and misaligned.ctypes.data % 4 == 1
    passed = _as_rows(misaligned)
    assert passed.flags.aligned and passed.ctypes.data % 4 == 0
    for backend in ("cpu", "onnxruntime"):
        with gemma_cyber.Classifier(backend=backend) as classifier:
            reference, reference_labels = classifier.classify_with_labels(inputs)
            probabilities, labels = classifier.classify_with_labels(misaligned)
            np.testing.assert_array_equal(classifier.classify(misaligned), reference)
        np.testing.assert_array_equal(probabilities, reference)
        np.testing.assert_array_equal(labels, reference_labels)


def test_zero_rows_is_an_empty_result():
    with gemma_cyber.Classifier(backend="cpu") as classifier:
        probabilities, labels = classifier.classify_with_labels(np.empty((0, 768), np.float32))
    assert probabilities.shape == (0,) and labels.shape == (0,)


def test_model_path_and_sha256(repo, golden):
    path = repo / "models" / "default.safetensors"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with gemma_cyber.Classifier(backend="cpu", model_path=path, model_sha256=digest) as by_hex:
        from_file = by_hex.classify(golden[0])
    with gemma_cyber.Classifier(backend="cpu", model_path=str(path), model_sha256=bytes.fromhex(digest)) as by_bytes:
        np.testing.assert_array_equal(by_bytes.classify(golden[0]), from_file)
    np.testing.assert_allclose(from_file, golden[1], rtol=0, atol=TOLERANCE)


def expect_error(kind, status, call, *fragments):
    with pytest.raises(kind) as caught:
        call()
    error = caught.value
    assert isinstance(error, gemma_cyber.Error)
    assert error.status is status
    assert error.message == str(error)
    assert error.message.startswith(f"GEMMA_CYBER_STATUS_{status.name}: "), error.message
    for fragment in fragments:
        assert fragment in error.message, error.message
    return error


def test_bad_embeddings_raise_with_the_librarys_status_and_message(golden):
    inputs = golden[0]
    with gemma_cyber.Classifier(backend="cpu") as c:
        expect_error(gemma_cyber.DimensionMismatchError, Status.DIMENSION_MISMATCH, lambda: c.classify(inputs[:, :767]), "767", "768")
        bad = inputs.copy()
        bad[5, 7] = np.nan
        expect_error(gemma_cyber.NonFiniteInputError, Status.NON_FINITE_INPUT, lambda: c.classify(bad))
        huge = inputs.astype(np.float64)
        huge[0, 0] = 1e300  # finite in float64, infinite once converted to float32
        expect_error(gemma_cyber.NonFiniteInputError, Status.NON_FINITE_INPUT, lambda: c.classify(huge))
        expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: c.classify(inputs[0]), "2-D")
        expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: c.classify(inputs[None]), "2-D")
        expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: c.classify([["a"] * 768]), "numbers")
        expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: c.classify([[1.0] * 768, [1.0]]))
        expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: c.classify(inputs.astype(np.complex64)))
        # Arrays that declare terabytes but hold nothing: the width is refused before any copy or
        # output is allocated (before, numpy's MemoryError, or gigabytes then the refusal).
        for wide in (np.empty((2**40, 0), np.float32), np.broadcast_to(np.float32(0), (2**20, 2**20))):
            expect_error(gemma_cyber.DimensionMismatchError, Status.DIMENSION_MISMATCH, lambda: c.classify(wide), "768")

        # A subclass whose shape is not its data's: read as the plain array it is (before, the
        # library was told 2**24 rows and read past the end).
        class Lying(np.ndarray):
            @property
            def shape(self):
                return (2**24, 768)

        np.testing.assert_allclose(c.classify(inputs[:1].view(Lying)), golden[1][:1], rtol=0, atol=TOLERANCE)
        # The classifier still works after every failure.
        np.testing.assert_allclose(c.classify(inputs), golden[1], rtol=0, atol=TOLERANCE)


def test_bad_options_raise_with_the_librarys_status_and_message(tmp_path):
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(backend="tpu"), "tpu")
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(threshold=1.5), "None for the model's own")
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(threshold=float("nan")))
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(num_threads=-1))
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(model_sha256="abc"))
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(model_sha256=b"\0" * 31), "31")
    missing = tmp_path / "missing.safetensors"
    expect_error(gemma_cyber.ModelNotFoundError, Status.MODEL_NOT_FOUND, lambda: gemma_cyber.Classifier(model_path=missing), "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all")
    expect_error(gemma_cyber.ModelInvalidError, Status.MODEL_INVALID, lambda: gemma_cyber.Classifier(model_path=garbage))
    # Wrong types and text that has no encoding are the package's errors too, not TypeError,
    # UnicodeEncodeError or OverflowError.
    for options in (
        {"model_path": 3},
        {"plugin_dir": 5},
        {"model_path": "/tmp/\ud800x"},
        {"backend": "plugin", "plugin_name": "\udcff"},
        {"threshold": 10**400},
        {"plugin_settings": 5},
    ):
        expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(**options))


def test_a_classifier_is_neither_copied_nor_set_up_twice(golden):
    import copy
    import pickle

    with gemma_cyber.Classifier(backend="cpu") as classifier:
        # A copy shared the native handle and each freed it: a crash.
        for duplicate in (copy.copy, copy.deepcopy, pickle.dumps):
            expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: duplicate(classifier), "copied")
        # A second __init__ dropped the handle without freeing it.
        expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: classifier.__init__(backend="cpu"), "once")
        np.testing.assert_allclose(classifier.classify(golden[0]), golden[1], rtol=0, atol=TOLERANCE)


def test_wrong_sha256_refuses_the_model(repo):
    path = repo / "models" / "default.safetensors"
    expect_error(gemma_cyber.ModelInvalidError, Status.MODEL_INVALID, lambda: gemma_cyber.Classifier(model_path=path, model_sha256="00" * 32))


def test_model_data_loads_like_model_path(repo):
    # A model other than the built-in one: data silently dropped would load the built-in model.
    path = repo / "tests" / "fixtures" / "relu_bn.safetensors"
    inputs = np.load(repo / "tests" / "golden" / "relu_bn.inputs.npy")
    expected = np.load(repo / "tests" / "golden" / "relu_bn.expected.npy")
    data = path.read_bytes()
    with gemma_cyber.Classifier(backend="cpu", model_path=path) as from_file:
        want = from_file.classify(inputs)
    np.testing.assert_allclose(want, expected, rtol=0, atol=TOLERANCE)
    for buffer in (data, bytearray(data), memoryview(data)):
        with gemma_cyber.Classifier(backend="cpu", model_data=buffer, model_sha256=hashlib.sha256(data).digest()) as c:
            np.testing.assert_array_equal(c.classify(inputs), want)
    # Given but empty is an empty model, not "not given" (which would be the built-in one).
    expect_error(gemma_cyber.ModelInvalidError, Status.MODEL_INVALID, lambda: gemma_cyber.Classifier(model_data=b""))
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(model_data=str(path)), "not text")
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(model_data=5), "bytes-like")
    # Both sources at once: the library refuses to guess.
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(model_path=path, model_data=data))


def test_onnxruntime_library_option_wins_over_the_environment(monkeypatch, tmp_path, golden):
    library = os.environ["GEMMA_CYBER_ONNXRUNTIME_LIB"]
    monkeypatch.setenv("GEMMA_CYBER_ONNXRUNTIME_LIB", str(tmp_path / "libonnxruntime.so"))
    with gemma_cyber.Classifier(backend="onnxruntime", onnxruntime_library=library) as classifier:
        assert library in classifier.device_name
        np.testing.assert_allclose(classifier.classify(golden[0]), golden[1], rtol=0, atol=TOLERANCE)
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: gemma_cyber.Classifier(onnxruntime_library="a\0b"), "NUL")


def test_missing_onnxruntime_library_is_backend_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_CYBER_ONNXRUNTIME_LIB", str(tmp_path / "libonnxruntime.so"))
    monkeypatch.delenv("ORT_DYLIB_PATH", raising=False)
    expect_error(gemma_cyber.BackendUnavailableError, Status.BACKEND_UNAVAILABLE, lambda: gemma_cyber.Classifier(backend="onnxruntime"))


def test_closed_classifier_raises_and_close_is_idempotent(golden):
    classifier = gemma_cyber.Classifier(backend="cpu")
    classifier.close()
    classifier.close()
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: classifier.classify(golden[0]), "closed")
    expect_error(gemma_cyber.InvalidArgumentError, Status.INVALID_ARGUMENT, lambda: classifier.input_dim, "closed")
    assert "closed" in repr(classifier)


@pytest.mark.parametrize("backend", ["cpu", "onnxruntime", "wgpu"])
def test_every_backend_agrees_with_the_reference(backend, golden, rows):
    """Every backend runs here for real: ONNX Runtime through GEMMA_CYBER_ONNXRUNTIME_LIB (set by
    tools/test.sh), wgpu on lavapipe in CI. A backend that cannot start fails the test."""
    inputs, expected, labels = golden
    with gemma_cyber.Classifier(backend=backend) as classifier:
        assert classifier.backend == backend
        assert classifier.device_name
        probabilities, got_labels = classifier.classify_with_labels(inputs)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE)
        np.testing.assert_array_equal(got_labels, labels)
        many = classifier.classify(rows[:1000])
    with gemma_cyber.Classifier(backend="cpu") as cpu:
        np.testing.assert_allclose(many, cpu.classify(rows[:1000]), rtol=0, atol=TOLERANCE)


def test_imports_from_a_zip_as_spark_py_files_ships_it(tmp_path, golden):
    """Spark's --py-files puts a zip on sys.path; the library inside is copied out once, to a
    user-private directory shared by every process, and works."""
    import os
    import subprocess
    import sys
    import zipfile

    package = pathlib.Path(gemma_cyber.__file__).parent
    archive = tmp_path / "gemma_cyber.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in package.iterdir():
            if path.is_file():
                z.write(path, f"gemma_cyber/{path.name}")
    np.save(tmp_path / "inputs.npy", golden[0])
    script = (
        "import sys, numpy, gemma_cyber\n"
        "print(gemma_cyber.__file__); print(gemma_cyber.library_path())\n"
        f"p = gemma_cyber.Classifier(backend='cpu').classify(numpy.load({str(tmp_path / 'inputs.npy')!r}))\n"
        f"numpy.save({str(tmp_path / 'out.npy')!r}, p)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(archive), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for _ in range(2):  # the second process reuses the first one's copy
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        module, library = result.stdout.split()
        assert module.startswith(str(archive))
        assert pathlib.Path(library).parent.parent == tmp_path / "tmp"
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), golden[1], rtol=0, atol=TOLERANCE)
    copies = list((tmp_path / "tmp").iterdir())
    assert len(copies) == 1 and (copies[0].stat().st_mode & 0o077) == 0


@pytest.fixture(scope="session")
def example_plugin_dir(repo, tmp_path_factory) -> pathlib.Path:
    """The plain-C example plugin, built with its documented script."""
    out = tmp_path_factory.mktemp("plugins")
    subprocess.run(["bash", str(repo / "examples/plugin-c/build.sh"), str(out)], check=True, capture_output=True)
    return out


def test_a_plugin_chosen_by_name_matches_the_golden_vectors(golden, example_plugin_dir):
    inputs, expected, _ = golden
    with gemma_cyber.Classifier(backend="plugin", plugin_name="example_c", plugin_dir=example_plugin_dir) as c:
        assert c.backend == "plugin"
        assert c.device_name.startswith("example_c ")
        np.testing.assert_allclose(c.classify(inputs), expected, atol=1e-5, rtol=0)


def test_plugin_options_are_checked(example_plugin_dir):
    expect_error(gemma_cyber.InvalidArgumentError, gemma_cyber.Status.INVALID_ARGUMENT,
                 lambda: gemma_cyber.Classifier(backend="plugin"), "plugin_name")
    expect_error(gemma_cyber.InvalidArgumentError, gemma_cyber.Status.INVALID_ARGUMENT,
                 lambda: gemma_cyber.Classifier(plugin_settings=["num_threads=2"]), "num_threads")
    expect_error(gemma_cyber.BackendUnavailableError, gemma_cyber.Status.BACKEND_UNAVAILABLE,
                 lambda: gemma_cyber.Classifier(backend="plugin", plugin_name="example_c",
                                                plugin_dir=example_plugin_dir,
                                                plugin_settings=["example_c.colour=blue"]), "colour")
    expect_error(gemma_cyber.InvalidArgumentError, gemma_cyber.Status.INVALID_ARGUMENT,
                 lambda: gemma_cyber.Classifier(plugin_settings="wgpu.adapter=x"), "sequence")
    # A None entry would be the NULL ending the C array, dropping the settings after it: with
    # the unknown key after it, the library would never see (and refuse) "example_c.colour".
    for settings in ([None, "example_c.colour=blue"], ["example_c.colour=blue", None]):
        expect_error(gemma_cyber.InvalidArgumentError, gemma_cyber.Status.INVALID_ARGUMENT,
                     lambda: gemma_cyber.Classifier(backend="plugin", plugin_name="example_c",
                                                    plugin_dir=example_plugin_dir, plugin_settings=settings),
                     f"plugin_settings[{settings.index(None)}] is None")
    expect_error(gemma_cyber.InvalidArgumentError, gemma_cyber.Status.INVALID_ARGUMENT,
                 lambda: gemma_cyber.Classifier(plugin_settings=["wgpu.adapter=a\0b"]),
                 "plugin_settings[0] contains a NUL byte")
