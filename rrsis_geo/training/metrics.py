"""Referring-segmentation metrics: oIoU (cIoU), mIoU (gIoU), Pr@X and category mIoU.

Each expression contributes one binary prediction and one binary target mask. Per expression we
keep the pixel counts of the intersection and of the union (exact Python ints) and derive
everything else from them when :meth:`RunningMetrics.compute` is called:

- **oIoU** (= cIoU): sum of intersections / sum of unions over all expressions.
- **mIoU** (= gIoU): mean of the per-expression IoU.
- **Pr@X**: share of expressions whose IoU passes ``X``; ``>=`` (LAVT, RMSIN, FIANet) or ``>``
  (RSRefSeg 1/2) by :attr:`Protocol.threshold_op`.
- **category mIoU**: mean over categories of the per-category mIoU (RSRefSeg 2 ``mean_iou``).

The numbers depend on choices that papers make differently, so they are explicit switches in
:class:`Protocol`, and :meth:`MetricResult.to_table` prints the protocol on its first line.
Empty masks follow one defined rule: an expression whose prediction and target are both empty
scores IoU 1 (``both_empty_is_1``, the default) and is counted in
:attr:`MetricResult.both_empty`. A target that is empty under a non-empty prediction, or the
reverse, scores IoU 0.

Sums use :func:`math.fsum` and the state holds only integers and strings, so results do not
depend on the order in which expressions arrive or in which partial states are merged: metrics
accumulated on several distributed ranks and merged equal those of one run over all expressions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "EMPTY_RULES",
    "RESOLUTIONS",
    "THRESHOLD_OPS",
    "MetricResult",
    "Protocol",
    "RunningMetrics",
]

RESOLUTIONS = ("original", "model_input")
"""Allowed :attr:`Protocol.resolution` values."""

THRESHOLD_OPS = (">=", ">")
"""Allowed :attr:`Protocol.threshold_op` values."""

EMPTY_RULES = ("both_empty_is_1", "both_empty_is_0")
"""Allowed :attr:`Protocol.empty_rule` values."""

_STATE_VERSION = 1


def _threshold_label(threshold: float) -> str:
    """The shortest text that reads back as ``threshold`` (``0.5`` -> ``"0.5"``)."""
    return repr(float(threshold))


@dataclass(frozen=True)
class Protocol:
    """How the metrics are computed; recorded with every result and printed with every table.

    Args:
        resolution: ``"original"`` when masks are scored at the data set's native size (RSRefSeg
            family), ``"model_input"`` when at the resized model input, e.g. 480 x 480 (LAVT
            family). Informational: the caller resizes the masks; the value is recorded.
        threshold_op: How Pr@X compares an expression's IoU to ``X``: ``">="`` (LAVT, RMSIN,
            FIANet) or ``">"`` (RSRefSeg 1/2).
        thresholds: The ``X`` of Pr@X, strictly increasing, each in [0, 1].
        empty_rule: The IoU of an expression whose prediction and target are both empty:
            ``"both_empty_is_1"`` (the defined rule, default) or ``"both_empty_is_0"`` (for
            reproducing code that scores an empty union as 0). Either way such expressions are
            counted in :attr:`MetricResult.both_empty`.

    Raises:
        ValueError: When a value is not one of the allowed ones.
    """

    resolution: str = "original"
    threshold_op: str = ">="
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    empty_rule: str = "both_empty_is_1"

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        if self.threshold_op not in THRESHOLD_OPS:
            raise ValueError(
                f"threshold_op must be one of {THRESHOLD_OPS}, got {self.threshold_op!r}"
            )
        if self.empty_rule not in EMPTY_RULES:
            raise ValueError(f"empty_rule must be one of {EMPTY_RULES}, got {self.empty_rule!r}")
        thresholds = tuple(float(t) for t in self.thresholds)
        if not thresholds:
            raise ValueError("thresholds must not be empty")
        if any(not 0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must lie in [0, 1], got {thresholds}")
        if any(b <= a for a, b in itertools.pairwise(thresholds)):
            raise ValueError(f"thresholds must be strictly increasing, got {thresholds}")
        object.__setattr__(self, "thresholds", thresholds)

    @property
    def empty_iou(self) -> float:
        """The IoU given to an expression whose prediction and target are both empty."""
        return 1.0 if self.empty_rule == "both_empty_is_1" else 0.0

    def passes(self, iou: float, threshold: float) -> bool:
        """Whether an expression with this IoU counts towards Pr@``threshold``."""
        return iou >= threshold if self.threshold_op == ">=" else iou > threshold

    def describe(self) -> str:
        """One line stating every switch, printed with every table."""
        xs = ", ".join(_threshold_label(t) for t in self.thresholds)
        return (
            f"protocol: resolution={self.resolution}; Pr@X counts IoU {self.threshold_op} X "
            f"for X in {{{xs}}}; empty_rule={self.empty_rule} (prediction and target both "
            f"empty -> IoU {self.empty_iou:g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``thresholds`` as a list)."""
        return {
            "resolution": self.resolution,
            "threshold_op": self.threshold_op,
            "thresholds": list(self.thresholds),
            "empty_rule": self.empty_rule,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Protocol:
        """The protocol written by :meth:`to_dict`."""
        return cls(
            resolution=data["resolution"],
            threshold_op=data["threshold_op"],
            thresholds=tuple(data["thresholds"]),
            empty_rule=data["empty_rule"],
        )


@dataclass(frozen=True)
class MetricResult:
    """Metrics over a set of expressions, as fractions in [0, 1].

    Attributes:
        oiou: Overall IoU (cIoU): sum of intersections / sum of unions. When every expression
            had an empty prediction and target (total union 0) it is the empty rule's IoU
            (1.0 by default).
        miou: Mean per-expression IoU (gIoU).
        precision: Pr@X by threshold ``X``: share of expressions whose IoU passes ``X``.
        category_miou: Mean over categories of the per-category mIoU; None when no expression
            had a category. Expressions without a category count in every other metric but in
            no category.
        per_category: Rows by category name (sorted): ``count``, ``both_empty``, ``oiou``,
            ``miou`` and ``precision`` (by threshold), computed like the overall values.
        count: Number of expressions.
        both_empty: Expressions whose prediction and target were both empty.
        protocol: How the values were computed.
        grouping: What the per-category rows group by: ``"category"``, or the name of another
            grouping given instead (e.g. ``"group"`` for expression kinds).
    """

    oiou: float
    miou: float
    precision: dict[float, float]
    category_miou: float | None
    per_category: dict[str, dict[str, Any]]
    count: int
    both_empty: int
    protocol: Protocol = field(default_factory=Protocol)
    grouping: str = "category"

    def headline(self) -> str:
        """The protocol line plus how many expressions had both masks empty."""
        return (
            f"{self.protocol.describe()}; both empty: {self.both_empty} of {self.count} expressions"
        )

    def to_table(self, percent: bool = True) -> str:
        """A paper-style Markdown table: Pr@X, oIoU and mIoU for all expressions and by category.

        Args:
            percent: Values in percent with 2 decimals (as papers report them); otherwise
                fractions with 4 decimals.

        Returns:
            Lines: the protocol (:meth:`headline`), a blank line, the table header, a row ``all``,
            one row per category and, when there are categories, a blank line and a closing
            ``category mIoU`` line (blank lines keep Markdown renderers from merging them).
        """

        def number(value: float) -> str:
            return f"{100.0 * value:.2f}" if percent else f"{value:.4f}"

        thresholds = self.protocol.thresholds
        header = ["subset", "n", *(f"Pr@{_threshold_label(t)}" for t in thresholds)]
        header += ["oIoU", "mIoU"]
        lines = [
            self.headline(),
            "",
            "| " + " | ".join(header) + " |",
            "|:---|" + "---:|" * (len(header) - 1),
        ]

        def row(
            name: str, count: int, precision: Mapping[float, float], oiou: float, miou: float
        ) -> None:
            cells = [name, str(count), *(number(precision[t]) for t in thresholds)]
            cells += [number(oiou), number(miou)]
            lines.append("| " + " | ".join(cells) + " |")

        row("all", self.count, self.precision, self.oiou, self.miou)
        for name, values in self.per_category.items():
            row(name, values["count"], values["precision"], values["oiou"], values["miou"])
        if self.category_miou is not None:
            lines.append("")
            lines.append(
                f"{self.grouping} mIoU: {number(self.category_miou)} "
                f"(mean of {len(self.per_category)} per-{self.grouping} mIoUs)"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (fractions; thresholds as string keys such as ``"0.5"``)."""

        def precision(values: Mapping[float, float]) -> dict[str, float]:
            return {_threshold_label(t): p for t, p in values.items()}

        return {
            "protocol": self.protocol.to_dict(),
            "grouping": self.grouping,
            "count": self.count,
            "both_empty": self.both_empty,
            "oiou": self.oiou,
            "miou": self.miou,
            "precision": precision(self.precision),
            "category_miou": self.category_miou,
            "per_category": {
                name: {
                    "count": values["count"],
                    "both_empty": values["both_empty"],
                    "oiou": values["oiou"],
                    "miou": values["miou"],
                    "precision": precision(values["precision"]),
                }
                for name, values in self.per_category.items()
            },
        }

    def to_csv_rows(self) -> list[dict[str, str | int | float]]:
        """Rows for :class:`csv.DictWriter`, all with the same keys, values as fractions.

        Keys: ``subset``, ``count``, ``both_empty``, ``pr@X`` per threshold, ``oiou``,
        ``miou``, then the protocol's ``resolution``, ``threshold_op`` and ``empty_rule``, so
        that every row says how it was computed. Rows: ``all``, one per category, and, when
        there are categories, ``category_mean`` whose ``miou`` is the category mIoU, whose
        ``count`` and ``both_empty`` sum the categories' and whose other metrics are ``""``.
        """
        protocol = {
            "resolution": self.protocol.resolution,
            "threshold_op": self.protocol.threshold_op,
            "empty_rule": self.protocol.empty_rule,
        }
        thresholds = self.protocol.thresholds

        def row(
            name: str,
            count: int,
            both_empty: int,
            precision: Mapping[float, float] | None,
            oiou: float | str,
            miou: float,
        ) -> dict[str, str | int | float]:
            values: dict[str, str | int | float] = {
                "subset": name,
                "count": count,
                "both_empty": both_empty,
            }
            for t in thresholds:
                values[f"pr@{_threshold_label(t)}"] = "" if precision is None else precision[t]
            values.update({"oiou": oiou, "miou": miou, **protocol})
            return values

        rows = [row("all", self.count, self.both_empty, self.precision, self.oiou, self.miou)]
        for name, v in self.per_category.items():
            rows.append(
                row(name, v["count"], v["both_empty"], v["precision"], v["oiou"], v["miou"])
            )
        if self.category_miou is not None:
            count = sum(v["count"] for v in self.per_category.values())
            empty = sum(v["both_empty"] for v in self.per_category.values())
            rows.append(row("category_mean", count, empty, None, "", self.category_miou))
        return rows


class RunningMetrics:
    """Accumulates per-expression intersections and unions; :meth:`compute` gives the metrics.

    Typical use, with one call per expression (not per batch)::

        metrics = RunningMetrics(Protocol(threshold_op=">"))
        for prediction, target, category, sent_id in samples:
            metrics.update(prediction, target, category=category, sample_id=sent_id)
        print(metrics.compute().to_table())

    Across distributed ranks, gather the plain-data :meth:`state` and rebuild::

        states = [None] * world_size
        torch.distributed.all_gather_object(states, metrics.state())
        total = RunningMetrics.from_states(states, duplicates="drop")

    ``duplicates="drop"`` discards repeated sample ids, such as the samples that
    ``DistributedSampler`` repeats to even out the ranks (it needs ``sample_id`` on updates).

    Args:
        protocol: How :meth:`compute` turns the counts into metrics; default :class:`Protocol`.
    """

    def __init__(self, protocol: Protocol | None = None) -> None:
        self.protocol = protocol if protocol is not None else Protocol()
        self._intersections: list[int] = []
        self._unions: list[int] = []
        self._categories: list[str | None] = []
        self._sample_ids: list[str | None] = []
        self._seen_ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._intersections)

    def _iou(self, intersection: int, union: int) -> float:
        return self.protocol.empty_iou if union == 0 else intersection / union

    def _append(
        self, intersection: int, union: int, category: str | None, sample_id: str | None
    ) -> None:
        if category is not None and not isinstance(category, str):
            raise TypeError(f"category must be a str or None, got {type(category).__name__}")
        if sample_id is not None:
            if not isinstance(sample_id, str):
                raise TypeError(f"sample_id must be a str or None, got {type(sample_id).__name__}")
            if sample_id in self._seen_ids:
                raise ValueError(f"sample_id {sample_id!r} was already counted")
            self._seen_ids.add(sample_id)
        self._intersections.append(intersection)
        self._unions.append(union)
        self._categories.append(category)
        self._sample_ids.append(sample_id)

    def update(
        self,
        prediction: np.ndarray,
        target: np.ndarray,
        category: str | None = None,
        sample_id: str | None = None,
    ) -> float:
        """Count one expression.

        Args:
            prediction: Predicted mask, 2-D boolean (threshold or argmax before calling).
            target: Ground-truth mask, boolean, same shape as ``prediction``.
            category: The expression's category name, for the per-category rows.
            sample_id: A unique id (e.g. the sentence id); lets merges detect duplicates.

        Returns:
            The expression's IoU under the protocol's empty rule.

        Raises:
            TypeError: When a mask is not boolean, or ``category``/``sample_id`` not a str.
            ValueError: When the masks are not 2-D, differ in shape, or ``sample_id`` was
                already counted.
        """
        prediction = np.asarray(prediction)
        target = np.asarray(target)
        for name, mask in (("prediction", prediction), ("target", target)):
            if mask.dtype != np.bool_:
                raise TypeError(
                    f"{name} must be a boolean mask, got dtype {mask.dtype} "
                    "(binarize first: the binarization is part of the protocol)"
                )
            if mask.ndim != 2:
                raise ValueError(
                    f"{name} must be one 2-D mask, got shape {mask.shape} "
                    "(call update once per expression)"
                )
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction shape {prediction.shape} differs from target shape {target.shape}"
            )
        intersection = int(np.count_nonzero(prediction & target))
        union = int(np.count_nonzero(prediction | target))
        self._append(intersection, union, category, sample_id)
        return self._iou(intersection, union)

    def merge(self, other: RunningMetrics, duplicates: str = "error") -> RunningMetrics:
        """Add another accumulator's expressions to this one.

        Args:
            other: Metrics accumulated elsewhere (another rank, another shard) under the same
                protocol.
            duplicates: What to do with a sample id of ``other`` that is already counted here:
                ``"error"`` raises, ``"drop"`` skips ``other``'s copy. Expressions without a
                sample id are always added.

        Returns:
            This accumulator, so merges can be chained.

        Raises:
            ValueError: When the protocols differ, ``duplicates`` is unknown, or a duplicate
                sample id is found under ``"error"``.
        """
        if duplicates not in ("error", "drop"):
            raise ValueError(f"duplicates must be 'error' or 'drop', got {duplicates!r}")
        if other.protocol != self.protocol:
            raise ValueError(
                f"cannot merge metrics under different protocols: "
                f"{self.protocol.describe()!r} vs {other.protocol.describe()!r}"
            )
        if duplicates == "error":
            repeated = sorted(self._seen_ids & other._seen_ids)
            if repeated:
                shown = ", ".join(repr(s) for s in repeated[:5])
                more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
                raise ValueError(f"sample ids counted twice: {shown}{more}")
        entries = zip(
            other._intersections,
            other._unions,
            other._categories,
            other._sample_ids,
            strict=True,
        )
        for intersection, union, category, sample_id in entries:
            if sample_id is not None and sample_id in self._seen_ids:
                continue  # only reachable under duplicates="drop"
            self._append(intersection, union, category, sample_id)
        return self

    def state(self) -> dict[str, Any]:
        """Plain lists, ints and strings (picklable, JSON-ready) that :meth:`from_state` reads."""
        return {
            "version": _STATE_VERSION,
            "protocol": self.protocol.to_dict(),
            "intersections": list(self._intersections),
            "unions": list(self._unions),
            "categories": list(self._categories),
            "sample_ids": list(self._sample_ids),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RunningMetrics:
        """Rebuild an accumulator from :meth:`state`.

        Raises:
            ValueError: When the state is malformed (version, lengths, counts, duplicate ids).
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown metrics state version {state.get('version')!r}")
        columns: list[Sequence[Any]] = [
            state["intersections"],
            state["unions"],
            state["categories"],
            state["sample_ids"],
        ]
        if len({len(column) for column in columns}) != 1:
            raise ValueError("metrics state columns differ in length")
        metrics = cls(Protocol.from_dict(state["protocol"]))
        for intersection, union, category, sample_id in zip(*columns, strict=True):
            if not (
                isinstance(intersection, int)
                and isinstance(union, int)
                and 0 <= intersection <= union
            ):
                raise ValueError(
                    f"invalid counts in metrics state: intersection {intersection!r}, "
                    f"union {union!r}"
                )
            metrics._append(intersection, union, category, sample_id)
        return metrics

    @classmethod
    def from_states(
        cls, states: Iterable[Mapping[str, Any]], duplicates: str = "error"
    ) -> RunningMetrics:
        """Merge several :meth:`state` dicts (e.g. one per rank) into one accumulator.

        Args:
            states: At least one state, all under the same protocol.
            duplicates: As in :meth:`merge`.

        Raises:
            ValueError: When ``states`` is empty, or as :meth:`merge` and :meth:`from_state`.
        """
        parts = [cls.from_state(state) for state in states]
        if not parts:
            raise ValueError("no metrics states to merge")
        total = parts[0]
        for part in parts[1:]:
            total.merge(part, duplicates=duplicates)
        return total

    def records(self) -> list[dict[str, Any]]:
        """One dict per expression, in arrival order, for per-sample reports.

        Keys: ``sample_id``, ``category``, ``intersection``, ``union`` and ``iou``.
        """
        return [
            {
                "sample_id": sample_id,
                "category": category,
                "intersection": intersection,
                "union": union,
                "iou": self._iou(intersection, union),
            }
            for intersection, union, category, sample_id in zip(
                self._intersections,
                self._unions,
                self._categories,
                self._sample_ids,
                strict=True,
            )
        ]

    def _summary(self, indices: Sequence[int]) -> dict[str, Any]:
        intersections = [self._intersections[i] for i in indices]
        unions = [self._unions[i] for i in indices]
        ious = [self._iou(i, u) for i, u in zip(intersections, unions, strict=True)]
        total_union = sum(unions)
        count = len(indices)
        return {
            "count": count,
            "both_empty": sum(1 for u in unions if u == 0),
            "oiou": (sum(intersections) / total_union if total_union else self.protocol.empty_iou),
            "miou": math.fsum(ious) / count,
            "precision": {
                t: sum(1 for iou in ious if self.protocol.passes(iou, t)) / count
                for t in self.protocol.thresholds
            },
        }

    def compute(self, grouping: str = "category") -> MetricResult:
        """The metrics over every expression counted so far.

        Args:
            grouping: What the labels passed as ``category`` to :meth:`update` are (named in
                the table's closing line and the JSON).

        Raises:
            ValueError: When no expression was counted.
        """
        if not self._intersections:
            raise ValueError("no expressions were counted")
        overall = self._summary(range(len(self._intersections)))
        by_category: dict[str, list[int]] = {}
        for index, category in enumerate(self._categories):
            if category is not None:
                by_category.setdefault(category, []).append(index)
        per_category = {name: self._summary(by_category[name]) for name in sorted(by_category)}
        category_miou = (
            math.fsum(row["miou"] for row in per_category.values()) / len(per_category)
            if per_category
            else None
        )
        return MetricResult(
            oiou=overall["oiou"],
            miou=overall["miou"],
            precision=overall["precision"],
            category_miou=category_miou,
            per_category=per_category,
            count=overall["count"],
            both_empty=overall["both_empty"],
            protocol=self.protocol,
            grouping=grouping,
        )
