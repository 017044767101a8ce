"""Bad input through the real CLI: one row per case of docs/reliability.md.

Every row runs ``python -m rrsis_geo segment`` in a subprocess on real files made here through
rasterio/GDAL, and checks the exit code, that stderr holds exactly the documented lines (one
``rrsis: error:`` line and the documented ``rrsis: warning:`` lines, nothing else), and that the
output folder holds what was there before and nothing more (or, for a run that succeeds,
exactly its outputs and their sidecars).

Rows that fail before the model loads pass ``--model`` a folder that does not exist: that they
show their own error, not "model not found", proves they were checked before any model load.
The rows about value ranges and resampling use ``fixed_range_model.py``, the per-pixel reference
model declaring the default model's 8-bit range and 0.3 m resolution (a load of a second, not
7-8 s); a few rows use the default model itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin

from rrsis_geo.models import DEFAULT_MODEL, SHIPPED_MODELS
from tests.cli_run import rrsis
from tests.rasters import textured, write_raster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "synthetic_scene.tif"
BRIGHTNESS = "python:rrsis_geo.inference.reference_models:brightness"
FIXED = f"python:{Path(__file__).with_name('fixed_range_model.py')}:factory"
DEFAULT = "default"  # no --model: the shipped default model
ABSENT = "absent"  # a model folder that does not exist: the row must fail before loading it
OUTPUTS = ("p.tif", "p.gpkg")
DEFAULT_CONFIG = json.loads((SHIPPED_MODELS / DEFAULT_MODEL / "config.json").read_text())
DEFAULT_GSD = DEFAULT_CONFIG["pretrained"]["gsd"]


# Scenes, written through rasterio into the row's input folder.

Scene = Callable[[Path], Path]


def raster(
    bands: int = 3,
    dtype: str = "uint8",
    pixel: float = 0.3,
    size: int = 64,
    crs: str | None = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
) -> Scene:
    """A textured scene of ``size`` x ``size`` pixels of ``pixel`` metres (UTM 33N)."""

    def make(folder: Path) -> Path:
        data = textured(bands, size, size, dtype=dtype if dtype != "float64" else "float32")
        if dtype == "float64":
            data = data.astype("float64")
            data[:, :8, :8] = np.nan
        if nodata is not None:
            data[:] = nodata
        origin = transform or from_origin(500_000.0, 5_000_000.0, pixel, pixel)
        return write_raster(folder / "scene.tif", data, crs, origin, nodata)

    return make


def no_geotransform(folder: Path) -> Path:
    path = folder / "scene.tif"
    profile = {"driver": "GTiff", "width": 96, "height": 80, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(textured(3, 80, 96))
    return path


def not_a_raster(folder: Path) -> Path:
    path = folder / "notes.tif"
    path.write_text("not a raster\n")
    return path


def truncated_tiff(folder: Path) -> Path:
    whole = raster(size=300)(folder)
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) // 2])
    return whole


def missing_file(folder: Path) -> Path:
    return folder / "no-such-scene.tif"


def a_folder(folder: Path) -> Path:
    (folder / "scene.tif").mkdir()
    return folder / "scene.tif"


# Checkpoints: copies of the shipped model, damaged.


def shipped_copy(tmp: Path) -> Path:
    folder = tmp / "checkpoint"
    shutil.copytree(SHIPPED_MODELS / DEFAULT_MODEL, folder)
    return folder


def truncated_checkpoint(tmp: Path) -> str:
    weights = shipped_copy(tmp) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    return str(weights.parent)


def mismatched_checkpoint(tmp: Path) -> str:
    config = shipped_copy(tmp) / "config.json"
    document = json.loads(config.read_text())
    document["config"]["dim"] = 96
    config.write_text(json.dumps(document))
    return str(config.parent)


def pickle_checkpoint(tmp: Path) -> str:
    import torch

    folder = tmp / "pickled"
    folder.mkdir()
    shutil.copy(SHIPPED_MODELS / DEFAULT_MODEL / "config.json", folder)
    torch.save({"weights": torch.zeros(2)}, folder / "pytorch_model.bin")
    return str(folder)


def not_a_checkpoint(tmp: Path) -> str:
    (tmp / "some-folder").mkdir()
    return str(tmp / "some-folder")


@dataclass(frozen=True)
class Row:
    """One case: what is run and what rrsis must say and leave.

    Attributes:
        id: The row's name (also in docs/reliability.md).
        scene: Writes the input.
        model: A ``--model`` value, :data:`DEFAULT`, :data:`ABSENT`, or a function making a
            checkpoint folder in the row's folder.
        code: The exit code.
        error: A part of the one error line (None: the run succeeds).
        warnings: A part of each warning line, in order.
        args: More arguments.
        sentence: The sentence.
        outputs: ``-o`` names in the output folder (or paths relative to it).
        before: Files in the output folder before the run, with their bytes (a name ending
            in ``/``: a folder).
    """

    id: str
    scene: Scene
    model: str | Callable[[Path], str]
    code: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    sentence: str = "the largest storage tank"
    outputs: tuple[str, ...] = OUTPUTS
    before: tuple[tuple[str, bytes], ...] = ()


GEO = "has no georeferencing: outputs are in pixel coordinates"
UPSAMPLE = "resampling will upsample it"
VALUES = "and the model expects uint8 values (0-255): each band is stretched from its 2-98"

ROWS = [
    # The input file.
    Row("not a raster", not_a_raster, ABSENT, 1, "not a raster that GDAL can read"),
    Row("truncated TIFF", truncated_tiff, ABSENT, 1, "scene.tif is truncated or corrupt"),
    Row("missing file", missing_file, ABSENT, 1, "input not found"),
    Row("a folder as input", a_folder, ABSENT, 1, "input is a folder, not a raster"),
    Row("no georeferencing", no_geotransform, FIXED, 0, warnings=(GEO,)),
    Row(
        "no CRS",
        raster(crs=None),
        FIXED,
        0,
        warnings=("has no CRS: outputs keep its coordinates without a CRS",),
    ),
    Row("rotated geotransform", raster(transform=Affine(0.28, 0.1, 5e5, 0.1, -0.28, 5e6)), FIXED),
    # Bands.
    Row("1 band", raster(bands=1), FIXED),
    Row("2 bands", raster(bands=2), FIXED, 1, "the raster has 2 bands and the model needs 3"),
    Row("4 bands", raster(bands=4), FIXED),
    Row("8 bands, --bands 8,7,6", raster(bands=8), FIXED, args=("--bands", "8,7,6")),
    Row("unknown band", raster(), ABSENT, 1, "band 9 does not exist: ", args=("--bands", "1,2,9")),
    Row("band list not numbers", raster(), ABSENT, 1, "--bands must be", args=("--bands", "red")),
    # Pixel types and values.
    Row("uint16", raster(dtype="uint16"), FIXED, warnings=(f"is uint16 {VALUES}",)),
    Row("int16", raster(dtype="int16"), FIXED, warnings=(f"is int16 {VALUES}",)),
    Row("float32", raster(dtype="float32"), FIXED, warnings=(f"is float32 {VALUES}",)),
    Row("float64 with NaN", raster(dtype="float64"), FIXED, warnings=(f"is float64 {VALUES}",)),
    Row(
        "all-nodata scene",
        raster(nodata=0),
        FIXED,
        warnings=("has no valid pixel (all nodata): nothing to segment, the outputs are empty",),
    ),
    # Resolution.
    Row(
        "300 m scene, model at 0.3 m",
        raster(pixel=300.0),
        FIXED,
        1,
        "scene.tif is 300 m per pixel and the model works at 0.3 m: resampling would upsample "
        "it 1000x to 64000 x 64000 pixels, over the 4x limit: pass --gsd 0",
    ),
    Row("10 m scene (33x)", raster(pixel=10.0), FIXED, 1, "upsample it 33x to 2133 x 2133"),
    Row(
        "10 m scene, default model",
        raster(pixel=10.0),
        DEFAULT,
        1,
        f"is 10 m per pixel and the model works at {DEFAULT_GSD:g} m: resampling would upsample "
        f"it {10 / DEFAULT_GSD:.0f}x",
    ),
    Row("10 m scene, --gsd 0", raster(pixel=10.0), FIXED, args=("--gsd", "0")),
    Row(
        "0.5 m scene (1.7x)",
        raster(pixel=0.5),
        FIXED,
        warnings=(f"0.5 m per pixel and the model works at 0.3 m: {UPSAMPLE} 1.7x to 107 x 107",),
    ),
    Row(
        "2 m scene, --max-upsampling 8",
        raster(pixel=2.0),
        FIXED,
        warnings=(f"{UPSAMPLE} 6.7x to 427 x 427 pixels",),
        args=("--max-upsampling", "8"),
    ),
    # The sentence.
    Row("empty sentence", raster(), ABSENT, 1, "the expression is empty", sentence=""),
    Row("whitespace sentence", raster(), ABSENT, 1, "the expression is empty", sentence=" \t\n "),
    Row(
        "10,000-character sentence",
        raster(),
        DEFAULT,
        sentence=("the largest tank " * 600)[:10_000],
    ),
    Row("non-ASCII sentence", raster(), DEFAULT, sentence="le plus grand réservoir 最大的储罐 🛢"),
    # Outputs.
    Row(
        "missing output folder",
        raster(),
        ABSENT,
        1,
        "output folder does not exist",
        outputs=("nofolder/p.tif",),
    ),
    Row(
        "output folder is a file",
        raster(),
        ABSENT,
        1,
        "output folder is not a folder",
        outputs=("afile/p.tif",),
        before=(("afile", b"a file"),),
    ),
    Row(
        "unknown output suffix",
        raster(),
        ABSENT,
        1,
        "unsupported output format '.xyz' for p.xyz",
        outputs=("p.xyz",),
    ),
    Row(
        "same output twice",
        raster(),
        ABSENT,
        1,
        "the same output is given twice",
        outputs=("p.tif", "p.tif"),
    ),
    Row(
        "existing output without --overwrite",
        raster(),
        ABSENT,
        1,
        "output exists: ",
        before=(("p.gpkg", b"precious \x00\xff bytes"),),
    ),
    Row(
        "a folder where a sidecar goes",
        raster(),
        ABSENT,
        1,
        "the sidecar of p.gpkg is a folder: ",
        before=(("p.gpkg.json/", b""),),
    ),
    # The model.
    Row("missing checkpoint", raster(), ABSENT, 1, "model not found: "),
    Row("truncated checkpoint", raster(), truncated_checkpoint, 1, "does not match the sha256"),
    Row(
        "mismatched checkpoint",
        raster(),
        mismatched_checkpoint,
        1,
        "does not fit config.json: size mismatch for",
    ),
    Row("pickle checkpoint", raster(), pickle_checkpoint, 1, "pickle files such as pytorch_model"),
    Row("--model at a plain folder", raster(), not_a_checkpoint, 1, "is not a checkpoint"),
]


def _model_arguments(row: Row, tmp: Path) -> list[str]:
    if row.model == DEFAULT:
        return []
    if row.model == ABSENT:
        return ["--model", str(tmp / "no-such-model")]
    return ["--model", row.model if isinstance(row.model, str) else row.model(tmp)]


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} | {
        p.name + "/": b"" for p in folder.iterdir() if p.is_dir()
    }


def check_stderr(stderr: str, row: Row) -> None:
    """Exactly the documented lines: the row's warnings, then its one error line (if any)."""
    lines = stderr.splitlines()
    expected = len(row.warnings) + (row.error is not None)
    assert len(lines) == expected, stderr
    for line, part in zip(lines, row.warnings, strict=False):
        assert line.startswith("rrsis: warning: ") and part in line, line
    if row.error is not None:
        assert lines[-1].startswith("rrsis: error: ") and row.error in lines[-1], lines[-1]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row: Row, tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for name, content in row.before:
        if name.endswith("/"):
            (out / name).mkdir()
        else:
            (out / name).write_bytes(content)
    scene = row.scene(inputs)
    before = _listing(out)
    outputs = [arg for name in row.outputs for arg in ("-o", out / name)]
    run = rrsis(
        "segment", scene, row.sentence, *outputs, *_model_arguments(row, tmp_path), *row.args,
        "--json",
    )  # fmt: skip
    assert run.returncode == row.code, run.stderr
    check_stderr(run.stderr, row)
    after = _listing(out)
    if row.code == 0:
        written = {name for target in row.outputs for name in (target, f"{target}.json")}
        assert set(after) == set(before) | written
        assert json.loads(run.stdout)["outputs"] == [str(out / name) for name in row.outputs]
    else:
        assert after == before  # nothing left, and what was there is byte-identical


# A small real file system mounted for one run: a full disk and a read-only folder.

MOUNTED_RUN = """
mount -t tmpfs -o "$1" rrsis-test "$2" || exit 97
folder=$2
shift 2
"$@"
code=$?
ls -A "$folder" > "$folder.listing"
exit $code
"""


def run_on_mounted_folder(
    options: str, folder: Path, *args: object
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a tmpfs of ``options`` mounted on ``folder``, in a mount namespace.

    ``unshare --mount --map-root-user`` lets an unprivileged user mount a tmpfs that only this
    run sees; it is gone when the run ends, so what was left in it is listed into
    ``folder.listing`` first. Skips where the sandbox allows no user or mount namespace.
    """
    probe = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", MOUNTED_RUN, "sh", options,
         str(folder), "true"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"no tmpfs mount in a user namespace here: {probe.stderr.strip()}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RRSIS_DEBUG", None)
    return subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", MOUNTED_RUN, "sh", options,
         str(folder), sys.executable, "-m", "rrsis_geo", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )  # fmt: skip


def test_full_disk_is_one_output_error_and_leaves_nothing(tmp_path: Path) -> None:
    """A 64 kB file system: the work raster of a 700 x 700 scene does not fit.

    libtiff prints a dozen raw ``_tiffWriteProc: No space left on device`` lines of its own;
    rrsis keeps them off the terminal and says one line, exit 1.
    """
    scene = raster(size=700)(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    run = run_on_mounted_folder(
        "size=64k", out, "segment", scene, "x", "-o", out / "p.tif", "-o", out / "p.gpkg",
        "--model", FIXED,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    row = Row("full disk", raster(), FIXED, 1, "no space left on the device of ")
    check_stderr(run.stderr, row)
    assert "work raster could not be written" in run.stderr
    assert (tmp_path / "out.listing").read_text() == ""


def test_unwritable_output_folder_fails_before_the_model(tmp_path: Path) -> None:
    """A read-only file system (writable by nobody, root included) on the output folder."""
    scene = raster()(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    run = run_on_mounted_folder(
        "ro,size=64k", out, "segment", scene, "x", "-o", out / "p.tif",
        "--model", tmp_path / "no-such-model",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    check_stderr(
        run.stderr, Row("unwritable", raster(), ABSENT, 1, "output folder is not writable")
    )
    assert (tmp_path / "out.listing").read_text() == ""


def test_existing_output_is_kept_byte_identical(tmp_path: Path) -> None:
    scene = raster()(tmp_path)
    kept = tmp_path / "p.tif"
    kept.write_bytes(b"precious \x00\xff bytes")
    run = rrsis("segment", scene, "x", "-o", kept, "--model", FIXED)
    assert run.returncode == 1 and kept.read_bytes() == b"precious \x00\xff bytes"
    run = rrsis("segment", scene, "x", "-o", kept, "--model", FIXED, "--overwrite", "--quiet")
    assert run.returncode == 0 and run.stderr == ""
    with rasterio.open(kept) as written:
        assert written.width == 64


def test_uint16_copy_of_the_example_finds_the_same_tank(tmp_path: Path) -> None:
    """The example scene scaled by 257 to uint16: stretched to the model's 8-bit range, the
    default model finds the tank it finds on the 8-bit original (the largest, object 5)."""
    import geopandas

    with rasterio.open(EXAMPLE) as src:
        profile = {**src.profile, "dtype": "uint16"}
        wide = tmp_path / "scene16.tif"
        with rasterio.open(wide, "w", **profile) as dst:
            dst.write(src.read().astype("uint16") * 257)
    out = tmp_path / "t.gpkg"
    run = rrsis("segment", wide, "the largest storage tank", "-o", out, "--json")
    assert run.returncode == 0, run.stderr
    row = Row("uint16 example", raster(), DEFAULT, warnings=(f"scene16.tif is uint16 {VALUES}",))
    check_stderr(run.stderr, row)
    expressions = json.loads(EXAMPLE.with_suffix(".expressions.json").read_text())
    tank = next(e["object_id"] for e in expressions if e["text"] == "The largest storage tank.")
    objects = geopandas.read_file(EXAMPLE.with_suffix(".objects.gpkg"))
    truth = objects.loc[objects["object_id"] == tank].geometry.iloc[0]
    found = geopandas.read_file(out).geometry.union_all()
    assert found.intersection(truth).area / found.union(truth).area > 0.5


def test_no_georeferencing_gives_valid_outputs_in_pixel_coordinates(tmp_path: Path) -> None:
    import geopandas

    scene = no_geotransform(tmp_path)
    raster_out, vector_out = tmp_path / "p.tif", tmp_path / "p.gpkg"
    run = rrsis("segment", scene, "x", "-o", raster_out, "-o", vector_out, "--model", FIXED)
    assert run.returncode == 0, run.stderr
    with rasterio.open(raster_out) as written:
        assert written.crs is None and written.transform == Affine.identity()
        assert (written.width, written.height) == (96, 80)  # not resampled
    polygons = geopandas.read_file(vector_out)
    assert polygons.crs is None and len(polygons)
    left, top, right, bottom = polygons.total_bounds
    assert 0 <= left < right <= 96 and 0 <= top < bottom <= 80
