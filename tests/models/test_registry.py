"""The model registry: one name space, dispatch on the checkpoint's architecture, one hash."""

import json
import shutil

import pytest

from rrsis_geo.errors import InputError
from rrsis_geo.models import DEFAULT_MODEL, default_model, weights_sha256
from rrsis_geo.models.registry import (
    ARCHITECTURES,
    Architecture,
    create_model,
    from_pretrained,
    list_models,
    register,
)
from rrsis_geo.nn.crobim import CroBIM


def test_the_default_model_loads_by_name_and_by_folder_with_the_same_weights_hash(tmp_path):
    by_name = from_pretrained(DEFAULT_MODEL)
    assert by_name.architecture.name == "crobim" and isinstance(by_name.model, CroBIM)
    assert by_name.checkpoint.sha256 == weights_sha256(default_model())
    copy = shutil.copytree(default_model(), tmp_path / "copy")
    by_folder = from_pretrained(copy)
    assert by_folder.checkpoint.folder == copy
    assert by_folder.checkpoint.sha256 == by_name.checkpoint.sha256


def test_dispatch_is_on_the_architecture_its_config_names(tmp_path):
    folder = shutil.copytree(default_model(), tmp_path / "other")
    document = json.loads((folder / "config.json").read_text())
    document["architecture"] = "nosuch"
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"unknown architecture 'nosuch' \(known: crobim"):
        from_pretrained(folder)


def test_a_named_config_is_built_not_loaded():
    model = create_model("crobim-lite", pretrained=False)
    assert isinstance(model, CroBIM) and model.config.name == "crobim-lite"
    with pytest.raises(InputError, match="architecture without released weights"):
        from_pretrained("crobim-lite")
    with pytest.raises(InputError, match="unknown model config 'nosuch'"):
        create_model("nosuch")


def test_hub_ids_are_resolved_offline_from_the_cache_only(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        from_pretrained("someone/crobim-weights")


def test_list_models_reads_every_architecture():
    rows = {row["name"]: row for row in list_models()}
    assert rows[DEFAULT_MODEL]["kind"] == "trained" and rows[DEFAULT_MODEL]["default"]
    assert {row["architecture"] for row in rows.values()} == set(ARCHITECTURES)
    assert rows["crobim-swinb"]["tile_size"] == 480
    # What each needs: its weights' sources, its size, their licences.
    large = rows["rsrefseg2-so400m-large"]
    assert large["sources"] == ["facebook/sam2.1-hiera-large", "google/siglip2-so400m-patch16-512"]
    assert large["licences"] == ["Apache-2.0"] and large["parameters"] > 1_000_000_000
    assert rows["crobim-swinb"]["licences"] == ["Apache-2.0", "MIT"]  # BERT, Swin
    default = create_model("crobim-lite", pretrained=False)
    assert rows["crobim-lite"]["parameters"] == sum(p.numel() for p in default.parameters())


def test_an_architecture_registers_once():
    with pytest.raises(ValueError, match="registered already"):
        register(Architecture("crobim", "again", "x:y", "x:z"))


def test_the_pretrained_block_is_what_the_pipeline_reads(tiny_config, tmp_path):
    from rrsis_geo.inference.predictor import CroBIMPredictor
    from rrsis_geo.nn.encoders import load_tokenizer
    from rrsis_geo.pretrained import ModelMetadata

    folder = CroBIM(tiny_config).save_pretrained(
        tmp_path / "ckpt", load_tokenizer(tiny_config.text)
    )
    document = json.loads((folder / "config.json").read_text())
    assert document["pretrained"] == json.loads(json.dumps(tiny_config.metadata().to_dict()))
    # Each value in one place: the architecture block holds none of the pretrained config.
    inference = {"threshold", "input_size", "normalization", "tile_overlap", "gsd", "vocabulary"}
    assert not inference & set(document["config"]) and "dim" in document["config"]
    loaded = from_pretrained(folder)
    assert loaded.metadata == tiny_config.metadata(loaded.checkpoint.sha256)
    assert ModelMetadata.from_dict(document["pretrained"]) == tiny_config.metadata()

    document["pretrained"]["threshold"] = 0.35  # the block, not the architecture, decides
    (folder / "config.json").write_text(json.dumps(document))
    assert CroBIMPredictor.from_pretrained(folder, device="cpu").metadata.threshold == 0.35
    assert from_pretrained(folder).model.config.threshold == 0.35  # rrsis eval reads this
    document["pretrained"]["colour"] = "red"
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"invalid pretrained block .*colour"):
        _ = from_pretrained(folder).metadata
