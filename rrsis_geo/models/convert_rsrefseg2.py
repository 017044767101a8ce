"""Import the RSRefSeg 2 authors' checkpoint (mmengine ``.pth``) into our checkpoint folder.

The released file is a pickle holding the whole mmseg model under ``'state_dict'`` (DeepSpeed
runs: ``'module'``), with PEFT's LoRA layout inside the adapted sub-trees
(``base_model.model.``, ``base_layer``, ``lora_A/B.default``). We merge LoRA
(:func:`~rrsis_geo.nn.rsrefseg2.merge_lora`), rename the authors' modules to ours and write
``model.safetensors`` + ``config.json`` with :meth:`RSRefSeg2.save_pretrained`; the config
records the hub ids of the base weights (SigLIP 2, SAM 2.1). A file that leaves the towers'
frozen weights out (only adapters, prompter and SAM's decoder) is completed from those hub ids
(found in the Hugging Face cache or a local folder, or fetched): the converted folder holds
every weight and loads offline.

Name map (authors -> ours):

- ``backbone.model.image_encoder.trunk.*`` (the original ``sam2`` package) ->
  ``sam.vision_encoder.backbone.*`` (``norm1/2`` -> ``layer_norm1/2``, ``mlp.layers.0/1`` ->
  ``mlp.proj_in/proj_out``, ``patch_embed.proj`` -> ``patch_embed.projection``); ``neck.convs.N.
  conv`` -> ``neck.convs.N``;
- ``backbone.model.sam_prompt_encoder.*`` -> ``sam.prompt_encoder.*`` (``pe_layer`` also gives
  ``sam.shared_image_embedding``, ``point_embeddings.N`` stacked into ``point_embed``,
  ``mask_downscaling.{0,1,3,4,6}`` -> ``mask_embed.{conv1,layer_norm1,conv2,layer_norm2,conv3}``);
- ``backbone.model.sam_mask_decoder.*`` -> ``sam.mask_decoder.*`` (``out_proj`` -> ``o_proj``,
  ``normN`` -> ``layer_normN``, ``output_upscaling.{0,1,3}`` -> ``upscale_conv1``,
  ``upscale_layer_norm``, ``upscale_conv2``; an MLP's ``layers.0`` / last -> ``proj_in`` /
  ``proj_out``, the middle ones -> ``layers.{i-1}``); ``no_mem_embed`` -> ``no_memory_embedding``;
- ``clip_vision_encoder.model.*`` -> ``siglip.vision_model.*`` (its pooling head is dropped:
  nothing reads it); ``clip_text_encoder.model.*`` -> ``siglip.text_model.*``,
  ``clip_text_encoder.logit_scale/bias`` -> ``siglip.logit_scale/bias``;
- ``prompter.*`` -> ``prompter.*``; ``decode_head.logit_scale2/bias2`` ->
  ``contrastive_logit_scale/bias`` (``*1``: a loss the released configs switch off, dropped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rrsis_geo.errors import InputError
from rrsis_geo.nn.checkpointing import fill_strictly
from rrsis_geo.nn.encoders import load_tokenizer
from rrsis_geo.nn.rsrefseg2 import RSRefSeg2, RSRefSeg2Config, merge_lora, named_config

__all__ = ["author_key_to_ours", "convert_rsrefseg2", "read_author_state"]

SAM = "backbone.model."
TOWERS = ("sam.vision_encoder.", "siglip.")
"""Our parameters of the towers LoRA adapts: frozen in training, a file may leave them out."""
_DROPPED = re.compile(
    r"^(data_preprocessor\.|decode_head\.logit_(scale|bias)1$|clip_vision_encoder\.model\.head\.)"
)
_PREFIXES = (
    ("backbone.model.image_encoder.trunk.", "sam.vision_encoder.backbone."),
    ("backbone.model.image_encoder.neck.", "sam.vision_encoder.neck."),
    ("backbone.model.sam_prompt_encoder.", "sam.prompt_encoder."),
    ("backbone.model.sam_mask_decoder.", "sam.mask_decoder."),
    ("clip_vision_encoder.model.", "siglip.vision_model."),
    ("clip_text_encoder.model.", "siglip.text_model."),
    ("clip_text_encoder.logit_", "siglip.logit_"),
    ("prompter.", "prompter."),
)
_EXACT = {
    "backbone.model.no_mem_embed": "sam.no_memory_embedding",
    "decode_head.logit_scale2": "contrastive_logit_scale",
    "decode_head.logit_bias2": "contrastive_logit_bias",
}
_SAM_RENAMES = (
    (r"\.norm(\d)\.", r".layer_norm\1."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.out_proj\.", ".o_proj."),
    (r"patch_embed\.proj\.", "patch_embed.projection."),
    (r"neck\.convs\.(\d+)\.conv\.", r"neck.convs.\1."),
    (r"output_upscaling\.0\.", "upscale_conv1."),
    (r"output_upscaling\.1\.", "upscale_layer_norm."),
    (r"output_upscaling\.3\.", "upscale_conv2."),
    (r"mask_downscaling\.0\.", "mask_embed.conv1."),
    (r"mask_downscaling\.1\.", "mask_embed.layer_norm1."),
    (r"mask_downscaling\.3\.", "mask_embed.conv2."),
    (r"mask_downscaling\.4\.", "mask_embed.layer_norm2."),
    (r"mask_downscaling\.6\.", "mask_embed.conv3."),
)
_MLP_LAYER = re.compile(r"^(?P<mlp>.*)\.layers\.(?P<index>\d+)\.(?P<leaf>weight|bias)$")


def read_author_state(source: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    """The tensors of the authors' file (``'state_dict'`` or DeepSpeed's ``'module'``).

    Raises:
        InputError: Without ``trust_pickle`` (in one line), or an unreadable / foreign file.
    """
    if not trust_pickle:
        raise InputError(
            f"{source}: the source is a pickle, which can run code when loaded; "
            "convert it only if you trust where it came from (trust_pickle)"
        )
    try:
        document = torch.load(source, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as error:
        raise InputError(f"{source}: not a readable torch file ({error})") from None
    state = None
    if isinstance(document, dict):
        state = document.get("state_dict", document.get("module"))
    if not isinstance(state, dict):
        raise InputError(f"{source}: no 'state_dict' or 'module' of weights in it")
    # DistributedDataParallel's wrapper adds "module." to every name.
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def author_key_to_ours(key: str) -> str | None:
    """Our name of one of the authors' (LoRA-merged) keys; None for keys we drop.

    Raises:
        KeyError: A key of no known module (named).
    """
    if key in _EXACT:
        return _EXACT[key]
    if _DROPPED.match(key):
        return None
    for theirs, ours in _PREFIXES:
        if key.startswith(theirs):
            renamed = ours + key[len(theirs) :]
            if key.startswith(SAM):
                for pattern, replacement in _SAM_RENAMES:
                    renamed = re.sub(pattern, replacement, renamed)
            return renamed
    raise KeyError(key)


def _sam_mlps(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAM 2's ``MLP.layers.i`` -> transformers' ``proj_in``, ``layers.{i-1}``, ``proj_out``."""
    depth: dict[str, int] = {}
    for key in state:
        match = _MLP_LAYER.match(key)
        if key.startswith("sam.") and match:
            depth[match["mlp"]] = max(depth.get(match["mlp"], 0), int(match["index"]) + 1)
    renamed = {}
    for key, value in state.items():
        match = _MLP_LAYER.match(key)
        if key.startswith("sam.") and match:
            index, last = int(match["index"]), depth[match["mlp"]] - 1
            layer = (
                "proj_in" if index == 0 else "proj_out" if index == last else f"layers.{index - 1}"
            )
            key = f"{match['mlp']}.{layer}.{match['leaf']}"
        renamed[key] = value
    return renamed


def to_our_state(
    author_state: dict[str, torch.Tensor],
    alpha: float,
    r: int,
    base_weight: Callable[[str], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Rename the authors' tensors to our module names and merge LoRA.

    Args:
        author_state: The authors' tensors.
        alpha: LoRA alpha.
        r: LoRA rank.
        base_weight: Our weight of a given name from the base models, for adapters whose
            frozen base layer the file left out.

    Raises:
        InputError: Keys of no known module (named), or adapters without a base layer.
    """
    state: dict[str, torch.Tensor] = {}
    unknown = []
    points: dict[int, torch.Tensor] = {}
    for key, value in author_state.items():
        try:
            ours = author_key_to_ours(key.replace("base_model.model.", ""))
        except KeyError:
            unknown.append(key)
            continue
        if ours is None:
            continue
        point = re.match(r"sam\.prompt_encoder\.point_embeddings\.(\d+)\.weight$", ours)
        if point:
            points[int(point[1])] = value
            continue
        state[ours] = value
        if ours == "sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
            del state[ours]
            # One matrix in SAM 2; transformers keeps it twice (image grid, prompt points).
            state["sam.shared_image_embedding.positional_embedding"] = value
            state["sam.prompt_encoder.shared_embedding.positional_embedding"] = value.clone()
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise InputError(f"unexpected keys in the source (no known module): {shown}")
    if points:
        state["sam.prompt_encoder.point_embed.weight"] = torch.cat(
            [points[i] for i in sorted(points)]
        )
    if "sam.no_memory_embedding" in state:  # SAM 2: (1, 1, C); the same in transformers
        state["sam.no_memory_embedding"] = state["sam.no_memory_embedding"].reshape(1, 1, -1)
    try:
        return merge_lora(_sam_mlps(state), alpha, r, base_weight)
    except ValueError as error:
        raise InputError(f"LoRA layout not understood: {error}") from None


class _BaseWeights:
    """SAM 2.1's and SigLIP 2's own weights, loaded from the config's sources when first asked.

    The authors' file may leave the frozen base weights out (they come from the hub ids); a
    converted folder holds every weight, so they are found (Hugging Face cache, local folder)
    or fetched once, here.
    """

    def __init__(self, config: RSRefSeg2Config) -> None:
        self.config = config
        self._state: dict[str, torch.Tensor] | None = None

    def __call__(self, key: str) -> torch.Tensor:
        return self.state([key])[key]

    def state(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The base weights (``keys`` name, in errors, what the file lacked)."""
        if self._state is None:
            sources = (self.config.sam.source, self.config.siglip.source)
            lacking = f"the source lacks base weights ({', '.join(sorted(keys)[:3])}...)"
            if not all(sources):
                raise InputError(f"{lacking} and the config names no hub id for them")
            try:
                self._state = RSRefSeg2(self.config, pretrained=True).state_dict()
            except InputError as error:
                raise InputError(f"{lacking}; {error}") from None
        return self._state


def convert_rsrefseg2(
    source: Path,
    target: Path,
    trust_pickle: bool,
    config: str | RSRefSeg2Config = "rsrefseg2-so400m-large",
    tokenizer: Any = None,
) -> Path:
    """Convert the authors' checkpoint into our checkpoint folder.

    Args:
        source: The ``.pth`` (mmengine) or ``mp_rank_00_model_states.pt`` (DeepSpeed) file.
        target: The checkpoint folder to write.
        trust_pickle: The user's explicit consent to unpickle ``source``.
        config: Our config of the architecture (named or given); its ``sam.source`` and
            ``siglip.source`` record where the base weights come from.
        tokenizer: The tokenizer to store (default: the config's).

    Returns:
        The target folder.

    Raises:
        InputError: No consent, an unreadable file, or keys that do not fit (named).
    """
    source, target = Path(source), Path(target)
    config = named_config(config) if isinstance(config, str) else config
    base = _BaseWeights(config)
    author_state = read_author_state(source, trust_pickle)
    state = to_our_state(author_state, config.lora_alpha, config.lora_r, base)
    model = RSRefSeg2(config, pretrained=False)
    lacking = [k for k in model.state_dict() if k not in state and k.startswith(TOWERS)]
    if lacking:
        base_state = base.state(lacking)
        state.update({key: base_state[key] for key in lacking})
    fill_strictly(model, state, str(source), config.name, shapes_from=config.name)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.text)
    return model.save_pretrained(target, tokenizer=tokenizer)
