"""Getting ready: the pyhost binary, the peers' virtualenv, wrk, and the open-files limit."""

import filecmp
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PEERS = ("granian", "uvicorn", "uvloop", "httptools", "orjson", "starlette")
# Installed, and imported by the check that decides whether to install them: the peers (each
# imports under its distribution's name) and cffi, the SDK's one dependency, since the SDK
# itself is installed with --no-deps.
PACKAGES = (*PEERS, "cffi")
# Peers installed at a fixed version (reinstalled when the virtualenv holds another): a
# framework's per-request cost changes from release to release more than a server's does.
PINNED = {"starlette": "1.10.0"}
WANTED_NOFILE = 65536


class SetupError(RuntimeError):
    """Something the benchmark needs could not be built or installed."""


def _run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run a setup command, echoing it; SetupError if it fails."""
    print(f"$ {' '.join(command)}", file=sys.stderr, flush=True)
    if subprocess.run(command, cwd=cwd, env=env, check=False).returncode != 0:
        raise SetupError(f"command failed: {' '.join(command)}")


def _target_dir(repo: Path) -> Path:
    """Cargo's target directory (CARGO_TARGET_DIR when set)."""
    configured = os.environ.get("CARGO_TARGET_DIR")
    return Path(configured).resolve() if configured else repo / "target"


def _cargo_env() -> dict[str, str]:
    """cargo's environment; PYO3_PYTHON defaults to the base interpreter, as in the Makefile."""
    env = dict(os.environ)
    if "PYO3_PYTHON" not in env:
        base = getattr(sys, "_base_executable", sys.executable)
        env["PYO3_PYTHON"] = os.path.realpath(base)
    return env


def pyhost_binary(repo: Path, given: str | None, release: bool) -> Path:
    """The pyhost binary: ``given`` if set, else one built by cargo (release or debug)."""
    if given is not None:
        path = Path(given).resolve()
        if not os.access(path, os.X_OK):
            raise SetupError(f"--bin {given}: not an executable file")
        return path
    command = ["cargo", "build", "--bin", "pyhost"]
    if release:
        command.insert(2, "--release")
    _run(command, cwd=repo, env=_cargo_env())
    return _target_dir(repo) / ("release" if release else "debug") / "pyhost"


def wsload_binary(repo: Path, release: bool) -> Path:
    """The WebSocket echo load client (``bench/wsload``), built by cargo (release or debug)."""
    command = ["cargo", "build", "-p", "pyhost-wsload"]
    if release:
        command.insert(2, "--release")
    _run(command, cwd=repo, env=_cargo_env())
    path = _target_dir(repo) / ("release" if release else "debug") / "wsload"
    if not path.exists():
        raise SetupError(f"{path}: cargo built no wsload binary")
    return path


def _requirements() -> list[str]:
    """What ``pip install`` is given: every package, the pinned ones with their version."""
    return [f"{name}=={PINNED[name]}" if name in PINNED else name for name in PACKAGES]


def _peers_ready(python: Path) -> bool:
    """Whether the virtualenv imports every peer, and cffi, the pinned ones at their version."""
    probe = (
        f"import importlib.metadata, {', '.join(PACKAGES)}; "
        f"pins = {PINNED!r}; "
        "assert all(importlib.metadata.version(n) == v for n, v in pins.items())"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, check=False)
    return result.returncode == 0


def _installed_sdk(python: Path) -> Path | None:
    """The directory of the pyhost package the virtualenv imports, if it imports one."""
    probe = "import pathlib, pyhost; print(pathlib.Path(pyhost.__file__).resolve().parent)"
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def _sdk_files(package: Path) -> dict[Path, Path]:
    """The files of an SDK package tree by relative path, bytecode caches left out."""
    return {
        path.relative_to(package): path
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _sdk_current(python: Path, pyruntime: Path) -> bool:
    """Whether the virtualenv holds an installed (not editable) copy of this checkout's SDK."""
    installed = _installed_sdk(python)
    source = (pyruntime / "pyhost").resolve()
    if installed is None or installed == source:
        return False
    ours, theirs = _sdk_files(source), _sdk_files(installed)
    return ours.keys() == theirs.keys() and all(
        filecmp.cmp(ours[name], theirs[name], shallow=False) for name in ours
    )


def ensure_venv(venv: Path, pyruntime: Path) -> None:
    """Create the benchmark's virtualenv and install the peers and this checkout's SDK.

    The SDK is installed the way its users install it, from a wheel, not editable: an editable
    install adds an import hook whose imports (``pathlib``, ``urllib.parse``, ``ipaddress``,
    ``importlib.util``) measured about 1 MiB of pyhost's peak RSS, a cost no deployed app
    pays. It is built from a copy of ``pyruntime`` so that setuptools' build directory stays
    out of the checkout, and reinstalled whenever its files differ from the checkout's.
    """
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)])
    if not _peers_ready(python):
        _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        _run([str(python), "-m", "pip", "install", "--quiet", *_requirements()])
    if not _sdk_current(python, pyruntime):
        with tempfile.TemporaryDirectory(prefix="pyhost-sdk-") as scratch:
            copy = Path(scratch) / "pyruntime"
            shutil.copytree(
                pyruntime, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
            )
            install = ["install", "--quiet", "--no-deps", "--force-reinstall", str(copy)]
            _run([str(python), "-m", "pip", *install])
    if not _peers_ready(python) or not _sdk_current(python, pyruntime):
        raise SetupError(
            f"{venv}: after installing, a peer still does not import, or the pyhost SDK "
            f"it imports still differs from {pyruntime / 'pyhost'}"
        )


def compile_bytecode(python: Path, *sources: Path) -> None:
    """Byte-compile ``sources`` (the benchmark apps) with the venv's interpreter.

    pip compiles the SDK and the peers when it installs them; the apps would otherwise be
    compiled at every server start (or cached only where the environment allows writing
    bytecode), which costs start-up time and leaves the compiler's garbage in the server's
    heap.
    """
    _run([str(python), "-m", "compileall", "-q", *(str(source) for source in sources)])


def drop_cached_pages(pyhost_bin: Path, venv: Path) -> int:
    """Drop the servers' freshly written binaries from the page cache; how many files were.

    A mapped file's resident size depends on how its pages entered the page cache, not only on
    what the process touches (the kernel maps the cached pages around each fault). Granian's
    extension module measured 12 MiB resident in its worker right after ``pip install`` and
    3 MiB once its pages had been dropped and read back on demand: the worker's peak RSS at 64
    connections was 36 MiB, 30 after a plain copy of the file and 29 after the drop, nothing
    else changed. A freshly copied pyhost binary measured 0.1-0.4 MiB more than after the drop.
    Dropping the pyhost binary and every extension module in the virtualenv once, before any
    server starts, gives every server the state of a machine rebooted since the install. Only
    pages no process maps are dropped; the system's shared libraries were read on demand long
    ago.
    """
    files = [pyhost_bin, *sorted(venv.rglob("*.so"))]
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except OSError as error:
            raise SetupError(f"{path}: cannot drop it from the page cache: {error}") from error
    return len(files)


def ensure_bench_file(path: Path, size: int) -> None:
    """The download scenarios' file: ``size`` pseudo-random bytes (so no server or layer can
    compress them), made once and kept while its size is right."""
    if path.is_file() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        for index in range(size >> 20):
            out.write(index.to_bytes(8, "little") + block[8:])
        out.write(block[: size & ((1 << 20) - 1)])


def ensure_wrk() -> None:
    """Install wrk with apt-get when it is missing (running ``apt-get update`` if needed)."""
    if shutil.which("wrk"):
        return
    install = ["apt-get", "install", "-y", "wrk"]
    try:
        _run(install)
    except SetupError:
        _run(["apt-get", "update"])
        _run(install)
    if not shutil.which("wrk"):
        raise SetupError("wrk is still not on PATH after apt-get install")


def ensure_taskset() -> None:
    """taskset and chrt (util-linux) pin and schedule the processes; fail early without them."""
    for tool in ("taskset", "chrt"):
        if not shutil.which(tool):
            raise SetupError(f"{tool} not found (it comes with util-linux)")


def raise_nofile_limit(needed: int) -> int:
    """Raise this process's open-files limit (inherited by servers and wrk); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        print(f"warning: open-files limit {target} < {needed} needed", file=sys.stderr)
    return target


def peer_versions(python: Path) -> dict[str, str]:
    """Installed versions of the peers (and Python itself) in the benchmark's virtualenv."""
    probe = (
        "import importlib.metadata as m, json, platform; "
        f"print(json.dumps({{**{{n: m.version(n) for n in {list(PEERS)!r}}}, "
        "'python': platform.python_version()}))"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {}
    return dict(json.loads(out.stdout))
