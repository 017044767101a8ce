"""A BERT WordPiece tokenizer on the ``tokenizers`` library alone, without ``transformers``.

Importing ``transformers`` for its tokenizer costs about a second of ``rrsis segment``'s start-up.
:class:`LightBertTokenizer` reads the same ``tokenizer.json`` with the Rust ``tokenizers``
library that transformers' fast BERT tokenizer wraps, configures it as transformers does, and
reproduces the part of its ``__call__`` that rrsis uses: same ids, same masks.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Encoding, Tokenizer, models, normalizers, pre_tokenizers

__all__ = ["LightBertTokenizer"]

# transformers' tokenizer_class values of a BERT WordPiece tokenizer (v4 names the fast one
# BertTokenizerFast, v5 names it BertTokenizer).
_BERT_CLASSES = frozenset({"BertTokenizer", "BertTokenizerFast"})
# What save_pretrained copies: the files transformers writes and reads back.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
# transformers' model_max_length when a tokenizer declares none (VERY_LARGE_INTEGER), and the
# bound above which it treats model_max_length as no limit (LARGE_INTEGER).
_UNDECLARED_LENGTH = int(1e30)
_LARGE_LENGTH = int(1e20)

BatchLists = dict[str, Any]


@dataclass(frozen=True)
class _LengthPlan:
    """How one call pads and truncates.

    Attributes:
        pad: Whether to pad.
        pad_length: Length to pad to; None pads to the batch's longest sequence.
        truncate_at: Length to cut at, special tokens included; None does not cut.
    """

    pad: bool
    pad_length: int | None
    truncate_at: int | None


class LightBertTokenizer:
    """transformers' fast BERT tokenizer for what rrsis asks of it, with only ``tokenizers``.

    Build it with :meth:`from_folder`.

    Args:
        folder: The folder it was read from (:meth:`save_pretrained` copies its files).
        backend: The Rust tokenizer of ``folder/tokenizer.json``.
        settings: The content of ``folder/tokenizer_config.json``.

    Attributes:
        pad_token: The padding token.
        pad_token_id: Its id.
        model_max_length: Length that ``padding="max_length"`` and ``truncation=True`` use
            without ``max_length``.
    """

    def __init__(self, folder: Path, backend: Tokenizer, settings: dict[str, Any]) -> None:
        self.folder = folder
        self._backend = backend
        # transformers rebuilds the normalizer from tokenizer_config.json (its defaults are
        # BERT's), whatever tokenizer.json says: lower case, accents and Chinese characters.
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
            strip_accents=settings.get("strip_accents"),
            lowercase=settings.get("do_lower_case", True),
        )
        self.pad_token: str = _token_text(settings.get("pad_token", "[PAD]"))
        pad_token_id = backend.token_to_id(self.pad_token)
        if pad_token_id is None:
            raise ValueError(f"pad token {self.pad_token!r} is not in {folder}'s vocabulary")
        self.pad_token_id: int = pad_token_id
        self.model_max_length: int = int(settings.get("model_max_length") or _UNDECLARED_LENGTH)
        self._padding_side = settings.get("padding_side", "right")
        self._truncation_side = settings.get("truncation_side", "right")

    @classmethod
    def from_folder(cls, folder: str | Path) -> LightBertTokenizer | None:
        """The tokenizer of a transformers tokenizer folder, or None when it is no plain BERT one.

        A plain BERT tokenizer has a ``tokenizer.json`` with a WordPiece model, BERT's
        normalizer and pre-tokenizer, and a ``tokenizer_config.json`` naming ``BertTokenizer``
        or ``BertTokenizerFast``; for any other, None says to use transformers.
        """
        folder = Path(folder)
        tokenizer_file, settings_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
        if not tokenizer_file.is_file() or not settings_file.is_file():
            return None
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
        if settings.get("tokenizer_class") not in _BERT_CLASSES:
            return None
        special_tokens_file = folder / "special_tokens_map.json"
        if "pad_token" not in settings and special_tokens_file.is_file():
            # Older folders name their special tokens there only.
            special_tokens = json.loads(special_tokens_file.read_text(encoding="utf-8"))
            settings["pad_token"] = special_tokens.get("pad_token", "[PAD]")
        backend = Tokenizer.from_file(str(tokenizer_file))
        if not _is_bert_wordpiece(backend):
            return None
        try:
            return cls(folder, backend, settings)
        except ValueError:  # no usable pad token: leave such oddities to transformers
            return None

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> BatchLists:
        """Token ids and attention masks of one text or a batch, as transformers returns them.

        Args:
            text: A text, or a list of texts.
            padding: ``False``/``"do_not_pad"``, ``True``/``"longest"`` (to the batch's
                longest), or ``"max_length"`` (to ``max_length``, else ``model_max_length``).
            truncation: Cut to ``max_length`` (else ``model_max_length``), special tokens
                included. None truncates only when ``max_length`` is given without padding.
            max_length: See ``padding`` and ``truncation``.
            return_tensors: ``"pt"`` for long tensors ``(B, T)``, None for lists.
            add_special_tokens: Wrap each text in ``[CLS] ... [SEP]``.

        Returns:
            ``{"input_ids": ..., "attention_mask": ...}``: lists (flat for one text, nested for
            a batch) or tensors ``(B, T)`` (one row for one text).

        Raises:
            ValueError: An unknown ``padding`` or ``return_tensors``, or tensors asked for
                sequences of different lengths.
        """
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors {return_tensors!r} is not supported (None or 'pt')")
        texts = [text] if isinstance(text, str) else list(text)
        self._configure(self._plan(padding, truncation, max_length))
        encodings = self._backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        return _collate(encodings, isinstance(text, str), return_tensors == "pt")

    @property
    def _declared_limit(self) -> int | None:
        """``model_max_length``, or None when the tokenizer declares none."""
        return None if self.model_max_length > _LARGE_LENGTH else self.model_max_length

    def _plan(
        self, padding: bool | str, truncation: bool | None, max_length: int | None
    ) -> _LengthPlan:
        """The padding and truncation of one call, by transformers' rules.

        These are ``_get_padding_truncation_strategies``'s, quirks included: ``padding=True``
        ignores ``max_length``, and without ``max_length`` both fall back to
        ``model_max_length``, or to nothing when the tokenizer declares none.
        """
        if padding is False or padding == "do_not_pad":
            pad, pad_length = False, None
        elif padding is True or padding == "longest":
            pad, pad_length = True, None
        elif padding == "max_length":
            pad_length = max_length if max_length is not None else self._declared_limit
            pad = pad_length is not None
        else:
            raise ValueError(f"padding {padding!r} is not supported")
        if truncation is None:
            # transformers' backward compatibility: max_length alone asks for truncation.
            truncation = max_length is not None and padding is False
        truncate_at = None
        if truncation:
            truncate_at = max_length if max_length is not None else self._declared_limit
        return _LengthPlan(pad=pad, pad_length=pad_length, truncate_at=truncate_at)

    def _configure(self, plan: _LengthPlan) -> None:
        """Set the Rust tokenizer's padding and truncation for one call, as transformers does.

        A tokenizer.json may carry its own (the shipped model's pads and cuts at 24): like
        transformers, every call replaces them.
        """
        if plan.truncate_at is None:
            self._backend.no_truncation()
        else:
            self._backend.enable_truncation(
                plan.truncate_at, strategy="longest_first", direction=self._truncation_side
            )
        if not plan.pad:
            self._backend.no_padding()
        else:
            self._backend.enable_padding(
                direction=self._padding_side,
                pad_id=self.pad_token_id,
                pad_token=self.pad_token,
                length=plan.pad_length,
            )

    def save_pretrained(self, folder: str | Path) -> tuple[str, ...]:
        """Copy the files this tokenizer was read from into ``folder`` (made if needed).

        transformers' ``AutoTokenizer.from_pretrained(folder)`` loads the copy.

        Returns:
            The paths written.
        """
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for name in _TOKENIZER_FILES:
            source = self.folder / name
            if not source.is_file():
                continue
            destination = target / name
            if not destination.exists() or not destination.samefile(source):
                shutil.copyfile(source, destination)
            written.append(str(destination))
        return tuple(written)


def _is_bert_wordpiece(backend: Tokenizer) -> bool:
    """Whether a Rust tokenizer is BERT's: WordPiece, BertNormalizer, BertPreTokenizer."""
    return (
        isinstance(backend.model, models.WordPiece)
        and isinstance(backend.normalizer, normalizers.BertNormalizer)
        and isinstance(backend.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
    )


def _token_text(token: str | dict[str, Any]) -> str:
    """A special token of tokenizer_config.json: a string, or an AddedToken's dict."""
    return token["content"] if isinstance(token, dict) else str(token)


def _collate(encodings: list[Encoding], one_text: bool, as_tensors: bool) -> BatchLists:
    """The ids and masks of ``encodings`` laid out as transformers does: lists or tensors."""
    ids = [encoding.ids for encoding in encodings]
    masks = [encoding.attention_mask for encoding in encodings]
    if as_tensors:
        if len({len(row) for row in ids}) > 1:
            raise ValueError(
                "sequences of different lengths cannot be tensors: pad them (padding=True)"
            )
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(masks, dtype=torch.long),
        }
    if one_text:
        return {"input_ids": ids[0], "attention_mask": masks[0]}
    return {"input_ids": ids, "attention_mask": masks}
