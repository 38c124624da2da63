"""Host-internal: imports the pyhost SDK bundled into the host binary.

The host was built with one version of the SDK, and its ABI, route-spec format and bridge
expect exactly that one, so it serves ``pyhost`` and its submodules from the sources compiled
into the binary, ahead of ``sys.path``. ``importlib.resources`` reads the package's data
files (the C header) from the same bundle, and tracebacks show the bundled source lines.
"""

import importlib.machinery
import io
import marshal
import os
import sys
from importlib._bootstrap_external import MAGIC_NUMBER

ROOT = "pyhost"


# The classes below follow importlib's protocols (finder, loader, resource reader, traversable)
# without deriving from importlib.abc: importing it brings in importlib.resources, and with it
# tempfile, pathlib, shutil and the compression modules, 2.7 MiB of every server's memory.


class BundledFile:
    """A file of the bundle (an ``importlib.resources.abc.Traversable``)."""

    def __init__(self, name, text):
        self._name = name
        self._text = text

    @property
    def name(self):
        return self._name

    def iterdir(self):
        return iter(())

    def is_dir(self):
        return False

    def is_file(self):
        return True

    def joinpath(self, *descendants):
        raise FileNotFoundError(f"{self._name} is a file")

    __truediv__ = joinpath

    def open(self, mode="r", *args, **kwargs):
        data = io.BytesIO(self._text.encode("utf-8"))
        return data if "b" in mode else io.TextIOWrapper(data, *args, **kwargs)

    def read_bytes(self):
        return self._text.encode("utf-8")

    def read_text(self, encoding=None, errors=None):
        return self._text


class BundledDirectory:
    """A directory of the bundle (an ``importlib.resources.abc.Traversable``)."""

    def __init__(self, name):
        self._name = name
        self.children = {}

    @property
    def name(self):
        return self._name

    def iterdir(self):
        return iter(self.children.values())

    def is_dir(self):
        return True

    def is_file(self):
        return False

    def joinpath(self, *descendants):
        node = self
        for part in "/".join(descendants).split("/"):
            if not part:
                continue
            if not isinstance(node, BundledDirectory) or part not in node.children:
                raise FileNotFoundError(f"{part} is not in the bundled pyhost SDK")
            node = node.children[part]
        return node

    __truediv__ = joinpath

    def open(self, mode="r", *args, **kwargs):
        raise IsADirectoryError(self._name)


class Resources:
    """The package's resource reader (``importlib.resources.abc.TraversableResources``)."""

    def __init__(self, directory):
        self._directory = directory

    def files(self):
        return self._directory


class BundledSdk:
    """Finder and loader of the bundled ``pyhost`` package."""

    def __init__(self, files, version, magic):
        self.version = version
        self.origin = f"<pyhost SDK {version}, bundled with the host>"
        self._sources = {}
        self._code = {}
        self._packages = {}
        self._tree = BundledDirectory(ROOT)
        # Code compiled when the host was built, if by this very interpreter version.
        usable = magic == MAGIC_NUMBER
        for relative, text, code in files:
            parts = relative.split("/")
            node = self._tree
            for part in parts[1:-1]:
                node = node.children.setdefault(part, BundledDirectory(part))
            node.children[parts[-1]] = BundledFile(parts[-1], text)
            if relative.endswith(".py"):
                module = ".".join(parts)[: -len(".py")]
                if parts[-1] == "__init__.py":
                    module = module[: -len(".__init__")]
                    self._packages[module] = node
                self._sources[module] = (relative, text)
                if usable and code:
                    self._code[module] = code

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ROOT and not fullname.startswith(ROOT + "."):
            return None
        if fullname not in self._sources:
            return None
        relative, _ = self._sources[fullname]
        spec = importlib.machinery.ModuleSpec(
            fullname,
            self,
            origin=f"{self.origin}/{relative}",
            is_package=fullname in self._packages,
        )
        if spec.submodule_search_locations is not None:
            spec.submodule_search_locations.append(f"{self.origin}/{relative.rsplit('/', 1)[0]}")
        return spec

    def get_source(self, fullname):
        return self._sources[fullname][1]

    def get_code(self, fullname):
        code = self._code.pop(fullname, None)
        if code is not None:
            return marshal.loads(code)
        relative, text = self._sources[fullname]
        return compile(text, f"{self.origin}/{relative}", "exec", dont_inherit=True)

    def is_package(self, fullname):
        return fullname in self._packages

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.get_code(module.__name__), module.__dict__)

    def get_resource_reader(self, fullname):
        package = self._packages.get(fullname)
        return None if package is None else Resources(package)


def install(files, version, magic):
    """Serve ``pyhost`` from the bundle, ahead of ``sys.path``; return a note when an
    installed SDK of another version is shadowed (``None`` otherwise)."""
    finder = BundledSdk(files, version, magic)
    sys.meta_path.insert(0, finder)
    for name in [name for name in sys.modules if name == ROOT or name.startswith(ROOT + ".")]:
        del sys.modules[name]
    installed = installed_version()
    if installed is None or installed[0] == version:
        return None
    return (
        f"the virtualenv's pyhost SDK {installed[0]} ({installed[1]}) is not the SDK {version} "
        "this host was "
        f"built with; the host uses its own {version}. Install the matching SDK (pip install "
        f"pyhost=={version}, or ./pyruntime) for editors, type checkers and plugin unit tests"
    )


def installed_version():
    """``(version, directory)`` of a ``pyhost`` distribution on ``sys.path``, if any.

    Read from the ``pyhost-VERSION.dist-info`` directory's name: ``importlib.metadata`` would
    do, but importing it (email, zipfile, csv, ...) costs every server about 3 MiB.
    """
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(ROOT + "-") and name.endswith(".dist-info"):
                return name[len(ROOT) + 1 : -len(".dist-info")], entry
    return None
