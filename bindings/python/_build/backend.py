"""PEP 517 build backend for the gemma_cyber package, standard library only.

It exists so that `pip install ./bindings/python` works offline on a fresh machine: no setuptools
or wheel package has to be downloaded into pip's isolated build environment. The wheel holds the
Python sources and the C library built by `cargo build --release`: every `libgemma_cyber*.so*`
next to the core library, because backends are plugin libraries loaded from the core library's
own directory.

The library is looked for in $GEMMA_CYBER_LIB_DIR, else in the repository's target/release.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import io
import os
import re
import sys
import sysconfig
import tarfile
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bindings/python
REPO = os.path.dirname(os.path.dirname(HERE))
NAME = "gemma_cyber"
CORE = {"linux": "libgemma_cyber.so", "darwin": "libgemma_cyber.dylib", "win32": "gemma_cyber.dll"}


def _pyproject() -> dict:
    path = os.path.join(HERE, "pyproject.toml")
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - older Pythons read the few keys used here by hand
        text = open(path, encoding="utf-8").read()
        project = {k: v for k, v in re.findall(r'^(\w[\w-]*) = "([^"]*)"', text, re.M)}
        project["dependencies"] = re.findall(r'"([^"]+)"', re.search(r"dependencies = \[(.*?)\]", text).group(1))
        return project
    with open(path, "rb") as f:
        return tomllib.load(f)["project"]


def _version() -> str:
    """The library's version, from the crate's Cargo.toml: one version for every binding."""
    cargo = os.path.join(REPO, "Cargo.toml")
    if not os.path.isfile(cargo):  # an unpacked sdist
        text = open(os.path.join(HERE, "PKG-INFO"), encoding="utf-8").read()
        return re.search(r"^Version: (\S+)", text, re.M).group(1)
    text = open(cargo, encoding="utf-8").read()
    match = re.search(r'^version = "([^"]+)"', text, re.M)
    if not match:
        raise RuntimeError("no version in Cargo.toml")
    return match.group(1)


def _library_files() -> list[str]:
    directory = os.environ.get("GEMMA_CYBER_LIB_DIR") or os.path.join(REPO, "target", "release")
    core = CORE.get(sys.platform, CORE["linux"])
    if not os.path.isfile(os.path.join(directory, core)):
        raise RuntimeError(
            f"{core} not found in {directory}: run `cargo build --release` in {REPO} first "
            "(or set GEMMA_CYBER_LIB_DIR to the directory holding it)"
        )
    stem = core.split(".")[0]  # libgemma_cyber / gemma_cyber
    files = sorted(
        path
        for path in glob.glob(os.path.join(directory, stem + "*"))
        if os.path.isfile(path) and re.search(r"\.(so|dylib|dll)(\.\d+)*$", path)
    )
    return files


def _metadata(project: dict, version: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project['description']}",
        "License: Apache-2.0",
        f"Requires-Python: {project['requires-python']}",
    ]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    readme = open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    lines += ["Description-Content-Type: text/markdown", "", readme]
    return "\n".join(lines)


def _tag() -> str:
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"py3-none-{platform}"


def _sources() -> list[tuple[str, str]]:
    """(path on disk, path in the wheel) for the package's Python files and its marker."""
    package = os.path.join(HERE, NAME)
    return [
        (os.path.join(package, name), f"{NAME}/{name}")
        for name in sorted(os.listdir(package))
        if name.endswith((".py", ".pyi")) or name == "py.typed"
    ]


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = _pyproject()
    version = _version()
    tag = _tag()
    dist_info = f"{NAME}-{version}.dist-info"
    filename = f"{NAME}-{version}-{tag}.whl"
    entries: list[tuple[str, bytes, int]] = []  # arcname, data, mode
    for path, arcname in _sources():
        entries.append((arcname, open(path, "rb").read(), 0o644))
    for path in _library_files():
        entries.append((f"{NAME}/{os.path.basename(path)}", open(path, "rb").read(), 0o755))
    entries.append((f"{dist_info}/METADATA", _metadata(project, version).encode(), 0o644))
    wheel = f"Wheel-Version: 1.0\nGenerator: gemma_cyber backend\nRoot-Is-Purelib: false\nTag: {tag}\n"
    entries.append((f"{dist_info}/WHEEL", wheel.encode(), 0o644))
    record = [_record_line(name, data) for name, data, _ in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode(), 0o644))
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data, mode in entries:
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return filename


def build_sdist(sdist_directory, config_settings=None):
    """A source archive of the Python side only; building a wheel from it needs the library
    (GEMMA_CYBER_LIB_DIR)."""
    version = _version()
    base = f"{NAME}-{version}"
    filename = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        for name in ["pyproject.toml", "README.md", "_build/backend.py"]:
            tar.add(os.path.join(HERE, name), f"{base}/{name}")
        for path, arcname in _sources():
            tar.add(path, f"{base}/{arcname}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata(_pyproject(), version).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []
