import pytest

from tests.rasters import SHARED_REAL


@pytest.fixture
def shared_real():
    """The real rasters of ../shared/data/real, or a skip where a clone has no shared/ beside it."""
    if not SHARED_REAL.is_dir():
        pytest.skip(f"{SHARED_REAL} is absent (only beside the project's own checkout)")
    return SHARED_REAL
