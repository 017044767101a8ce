import numpy as np
import pytest
import rasterio

from rrsis_geo.errors import OutputError
from rrsis_geo.geo.writers import RasterEncoding, atomic_output, check_output_path


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), atomic_output(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_renames_when_complete_and_respects_existing_files(tmp_path):
    target = tmp_path / "out.geojson"
    with atomic_output(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".geojson"
        temporary.write_text("{}")
    assert target.read_text() == "{}"
    with pytest.raises(OutputError, match="output exists"), atomic_output(target):
        pass
    with atomic_output(target, overwrite=True) as temporary:
        temporary.write_text("[]")
    assert target.read_text() == "[]"


def test_shapefile_components_are_renamed_together(tmp_path):
    target = tmp_path / "p.shp"
    with atomic_output(target) as temporary:
        for suffix in (".shp", ".shx", ".dbf"):
            temporary.with_suffix(suffix).write_text(suffix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.dbf", "p.shp", "p.shx"]


def test_check_output_path(tmp_path):
    check_output_path(tmp_path / "new.tif", overwrite=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "new.tif", overwrite=False)


def test_encodings():
    probabilities = np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(
        RasterEncoding("probability").encode(probabilities), [[0, 127, 254, 255]]
    )
    np.testing.assert_array_equal(
        RasterEncoding("binary", 0.5).encode(probabilities), [[0, 1, 1, 255]]
    )
    assert np.isnan(RasterEncoding("float32").encode(probabilities)[0, 3])


def test_probability_raster_declares_its_scale(real_rasters, tmp_path):
    from rrsis_geo.inference.pipeline import segment
    from rrsis_geo.inference.reference_models import constant

    out = tmp_path / "p.tif"
    segment(real_rasters / "cogeo.tif", "x", constant(value=0.5), [out])
    with rasterio.open(out) as dst:
        assert dst.scales[0] == pytest.approx(1 / 254)
        assert dst.nodata == 255
        assert dst.tags()["RRSIS_EXPRESSION"] == "x"
        assert dst.overviews(1)  # a COG with overviews
