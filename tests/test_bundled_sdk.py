"""The host carries its SDK: `pyhost serve` imports the SDK it was built with, needs only cffi
in the interpreter, and a virtualenv with another SDK version changes nothing but a warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _cffi_backend
import cffi
import pycparser

from tests.harness import ServerFactory, base_env

APP = {
    "app/__init__.py": """
import pyhost
from pyhost import Router

router = Router()


@router.get("/sdk")
async def sdk(request):
    return {"origin": pyhost.__spec__.origin}
""",
}

CONFIG = """
[app]
module = "app"
venv = "{venv}"
"""


def make_venv(root: Path, *, with_cffi: bool, sdk_version: str | None = None) -> Path:
    """A virtualenv without pip; cffi (with pycparser) and a decoy SDK are made importable
    by hand."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    if with_cffi:
        # Only cffi from the test's own environment: the SDK installed there must not leak in.
        only = root / "cffi-only"
        only.mkdir()
        (only / "cffi").symlink_to(Path(cffi.__file__).parent)
        (only / "pycparser").symlink_to(Path(pycparser.__file__).parent)
        backend = Path(_cffi_backend.__file__)
        (only / backend.name).symlink_to(backend)
        (site / "cffi-only.pth").write_text(f"{only}\n")
    if sdk_version is not None:
        decoy = site / "pyhost"
        decoy.mkdir()
        (decoy / "__init__.py").write_text("raise ImportError('the decoy SDK was imported')\n")
        info = site / f"pyhost-{sdk_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: pyhost\nVersion: {sdk_version}\n"
        )
        (info / "RECORD").write_text("")
    return venv


def test_serves_from_a_virtualenv_that_has_no_sdk(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    venv = make_venv(tmp_path, with_cffi=True)
    env = base_env(VIRTUAL_ENV=None)
    with (
        server_factory.serve(APP, CONFIG.format(venv=venv), env=env) as server,
        server.client() as http,
    ):
        origin = http.get("/sdk").json()["origin"]
    assert "bundled with the host" in origin


def test_another_sdk_version_in_the_virtualenv_is_reported_and_not_used(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    venv = make_venv(tmp_path, with_cffi=True, sdk_version="0.0.7")
    env = base_env(VIRTUAL_ENV=None)
    with server_factory.serve(APP, CONFIG.format(venv=venv), env=env) as server:
        with server.client() as http:
            assert "bundled with the host" in http.get("/sdk").json()["origin"]
        log = server.wait_for_stderr("0.0.7")
    assert "pyhost SDK 0.0.7" in log
    assert "the host uses its own 0.1.0" in log


def test_check_names_the_bundled_sdk(server_factory: ServerFactory, tmp_path: Path) -> None:
    venv = make_venv(tmp_path, with_cffi=True)
    config = server_factory.write_app(APP, CONFIG.format(venv=venv))
    result = server_factory.run("check", "--config", str(config), env=base_env(VIRTUAL_ENV=None))
    assert result.returncode == 0, result.stderr
    assert "sdk:         pyhost 0.1.0 (bundled with the host)" in result.stdout


def test_without_cffi_the_error_says_what_to_install(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    venv = make_venv(tmp_path, with_cffi=False)
    config = server_factory.write_app(APP, CONFIG.format(venv=venv))
    result = server_factory.run("check", "--config", str(config), env=base_env(VIRTUAL_ENV=None))
    assert result.returncode != 0
    assert "install cffi" in result.stderr
    assert "app.venv" in result.stderr
