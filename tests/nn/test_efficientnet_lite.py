"""The plain-torch EfficientNet-Lite0 is timm's, name for name and bit for bit."""

import subprocess
import sys

import pytest
import timm
import torch

from rrsis_geo.nn.efficientnet_lite import EfficientNetLite0Features


@pytest.mark.parametrize("out_indices", [(1, 2, 3, 4), (0, 2, 4)])
def test_same_weights_same_features_as_timm(out_indices):
    torch.manual_seed(0)
    reference = timm.create_model("efficientnet_lite0", features_only=True, out_indices=out_indices)
    # Non-trivial statistics: timm initialises running means to 0 and variances to 1.
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    plain = EfficientNetLite0Features(out_indices)
    assert list(plain.state_dict()) == list(reference.state_dict())
    plain.load_state_dict(reference.state_dict(), strict=True)
    assert plain.channels == reference.feature_info.channels()
    assert plain.reductions == reference.feature_info.reduction()
    images = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = reference.eval()(images)
        got = plain.eval()(images)
    assert len(got) == len(out_indices)
    for ours, theirs in zip(got, expected, strict=True):
        assert torch.equal(ours, theirs)


def test_importing_it_imports_neither_timm_nor_torchvision():
    code = (
        "import sys, torch; from rrsis_geo.nn.efficientnet_lite import EfficientNetLite0Features;"
        "EfficientNetLite0Features()(torch.zeros(1, 3, 64, 64));"
        "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_unknown_levels_are_refused():
    with pytest.raises(ValueError, match="levels are 0 to 4"):
        EfficientNetLite0Features((1, 5))


def test_the_default_model_loads_without_timm_and_predicts_as_with_it():
    from rrsis_geo.models.registry import from_pretrained

    model = from_pretrained("crobim-lite-synth").model
    assert isinstance(model.vision.backbone, EfficientNetLite0Features)
    images = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[101, 1996, 2922, 2311, 102, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        plain = model(images, ids, mask)
        reference = timm.create_model(
            "efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4)
        )
        reference.load_state_dict(model.vision.backbone.state_dict(), strict=True)
        model.vision.backbone = reference.eval()
        with_timm = model(images, ids, mask)
    assert torch.equal(plain.mask_logits, with_timm.mask_logits)
