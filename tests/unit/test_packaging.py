"""The browser client has one source file, and every package that ships it carries it whole.

``broker/control/static/broker-client.js`` is served by the broker, shipped in the Python
wheel, and copied into the npm package at pack time. A symbolic link in ``clients/js/`` was
silently dropped by ``npm pack``; these tests build both packages and compare the bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "broker" / "control" / "static" / "broker-client.js"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_the_npm_package_carries_the_client(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Debian package npm)")
    result = subprocess.run(
        [npm, "pack", "--json", "--pack-destination", str(tmp_path)],
        cwd=ROOT / "clients" / "js",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    (packed,) = json.loads(result.stdout[result.stdout.index("[") :])
    with tarfile.open(tmp_path / packed["filename"]) as tar:
        member = tar.extractfile("package/broker-client.js")
        assert member is not None
        assert _digest(member.read()) == _digest(CLIENT.read_bytes())
    assert not (ROOT / "clients" / "js" / "broker-client.js").exists(), "postpack left a copy"


@pytest.mark.slow
def test_the_wheel_carries_the_client_and_the_static_files(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "build", "*.egg-info", "data", "data-*", "results"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(source)],
        check=True,
        timeout=300,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("broker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert _digest(archive.read("broker/control/static/broker-client.js")) == _digest(
            CLIENT.read_bytes()
        )
    for static in (ROOT / "broker" / "control" / "static").iterdir():
        assert f"broker/control/static/{static.name}" in names
