"""Object selection (ours, off in the paper configs): choose one of the objects the mask found.

Pixel-level fusion finds "storage tanks" (class, colour) well but has no way to choose *the
largest* or *the leftmost* of them: every tank matches the words equally, so the mask covers
them all. Selection works on objects instead of pixels:

1. the connected regions of the mask (logit > 0, at the mask head's stride 4) become candidate
   objects, each with its place, extent, size and ranks among the others (computed, not
   learnt: what "leftmost", "largest" or "second from the right" ask for; optionally also
   one-hot ranks from either end);
2. a small transformer scores the candidates: they attend to each other (comparisons), to the
   words and to the decoded visual tokens with their positions (anchors such as "the road" or
   "the airplane"; optionally with attention that falls with distance from the candidate);
   optionally the sentence also weighs each geometry feature directly ("leftmost": minus x);
3. each candidate's logits are lowered by how far its score falls below the best one (times a
   sharpness), so the chosen object keeps its mask and the others fade; a single candidate is
   left as it is.

The regions come from a threshold, so no gradient flows through their shapes. In CroBIM the
selector reads detached maps and learns from :func:`selection_loss` alone, while the mask loss
trains the mask before selection: choosing must not teach the mask to find fewer objects.
Scoring needs only :class:`SelectionInputs` (a few kilobytes per expression), so a selector can
also be fitted afresh on the inputs of a finished, frozen mask
(:mod:`rrsis_geo.training.selection`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.nn.capm import FeedForward
from rrsis_geo.nn.mid import cell_centres, sine_encode, sine_positions

__all__ = [
    "Candidates",
    "ObjectSelector",
    "SelectionInputs",
    "connected_components",
    "fading",
    "find_candidates",
    "referent_candidates",
    "selection_loss",
]

GEOMETRY_FEATURES = 12
PADDING_SCORE = -1e4
"""Score of padding candidates: finite, so that no NaN can reach a gradient."""


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected regions of ``(B, H, W)`` booleans, on any device.

    Returns:
        ``(B, H, W)`` int64 labels: 0 for background, otherwise one id per region (the largest
        flat index of the region, plus 1).
    """
    batch, height, width = mask.shape
    # float32 holds every index exactly up to 2**24 pixels, far above a stride-4 map.
    index = torch.arange(1, height * width + 1, device=mask.device, dtype=torch.float32)
    labels = index.view(1, height, width).expand(batch, -1, -1) * mask
    # Each round spreads the largest id one pixel further, so the rounds are bounded by the
    # longest path inside a region.
    for _ in range(height * width):
        grown = F.max_pool2d(labels.unsqueeze(1), 3, stride=1, padding=1)[:, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.long()


@dataclass
class Candidates:
    """Candidate objects of a batch, padded to ``K``.

    Attributes:
        masks: ``(B, K, H, W)`` float 0/1 region masks at the logits' resolution.
        valid: ``(B, K)`` bool, False for padding.
        geometry: ``(B, K, GEOMETRY_FEATURES)`` place, extent, size, ranks and confidence.
        centres: ``(B, K, 2)`` region centres (x, y) in [0, 1].
    """

    masks: torch.Tensor
    valid: torch.Tensor
    geometry: torch.Tensor
    centres: torch.Tensor


@dataclass
class SelectionInputs:
    """What the selector scores: the candidates without their masks, and what they attend to.

    Attributes:
        geometry: ``(B, K, F)`` candidate geometry (:class:`Candidates`).
        centres: ``(B, K, 2)`` candidate centres (x, y) in [0, 1].
        valid: ``(B, K)`` bool, False for padding.
        appearance: ``(B, K, P)`` mean pixel feature of each candidate's region.
        words: ``(B, T, D_t)`` plain word features.
        word_mask: ``(B, T)``, 1 for real tokens.
        visual: ``(B, D, H_v, W_v)`` decoded visual map, pooled.
    """

    geometry: torch.Tensor
    centres: torch.Tensor
    valid: torch.Tensor
    appearance: torch.Tensor
    words: torch.Tensor
    word_mask: torch.Tensor
    visual: torch.Tensor

    def map(self, function: Callable[[torch.Tensor], torch.Tensor]) -> SelectionInputs:
        """The same inputs with ``function`` applied to every tensor (index, move, cast)."""
        return SelectionInputs(**{f.name: function(getattr(self, f.name)) for f in fields(self)})

    @staticmethod
    def concatenate(parts: Sequence[SelectionInputs]) -> SelectionInputs:
        """Inputs of several batches as one batch."""
        names = [f.name for f in fields(SelectionInputs)]
        return SelectionInputs(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})


def _ascending_ranks(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Integer rank along dim 1 of ``(B, K, ...)`` values among the valid ones (0 = smallest).

    ``valid`` is ``(B, K)``; padding ranks after every valid candidate.
    """
    padding = ~valid.view(valid.shape + (1,) * (values.dim() - 2))
    return values.masked_fill(padding, float("inf")).argsort(dim=1).argsort(dim=1)


def _ranks(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Rank of each valid value among the valid ones, scaled to [0, 1] (0 = smallest)."""
    order = _ascending_ranks(values, valid).to(values.dtype)
    count = valid.sum(dim=1, keepdim=True).to(values.dtype)
    return torch.where(valid, order / (count - 1).clamp(min=1), torch.zeros_like(values))


RANK_CODES = 4
RANK_FEATURES = 2 * 3 * RANK_CODES
"""With ``ranks``: x, y and size, each ranked from either end, one-hot over :data:`RANK_CODES`."""


def _rank_codes(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """One-hot rank from either end (first, second, third, later) of each ``(B, K, F)`` value.

    "The second from the left" is rank 1 from one end whatever the number of objects, which
    the ranks scaled to [0, 1] do not say.
    """
    count = valid.sum(dim=1, keepdim=True).unsqueeze(2)
    ascending = _ascending_ranks(values, valid)
    descending = (count - 1 - ascending).clamp(min=0)
    codes = [
        F.one_hot(rank.clamp(max=RANK_CODES - 1), RANK_CODES).flatten(2)
        for rank in (ascending, descending)
    ]
    return torch.cat(codes, dim=2).to(values.dtype)


@torch.no_grad()
def find_candidates(logits: torch.Tensor, max_candidates: int, ranks: bool = False) -> Candidates:
    """The ``max_candidates`` largest regions of ``logits > 0`` per image, with their geometry.

    Args:
        logits: ``(B, H, W)`` mask logits.
        max_candidates: K; smaller regions beyond the K largest are left out.
        ranks: Append :data:`RANK_FEATURES` one-hot ranks to the geometry.
    """
    batch, height, width = logits.shape
    labels = connected_components(logits > 0).flatten(1)
    counts = torch.zeros(batch, height * width + 1, device=logits.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=counts.dtype))
    counts[:, 0] = 0
    areas, ids = counts.topk(min(max_candidates, height * width), dim=1)
    valid = areas > 0
    masks = (labels.unsqueeze(1) == ids.unsqueeze(2)) & valid.unsqueeze(2)
    masks = masks.view(batch, -1, height, width).to(logits.dtype)
    if masks.shape[1] < max_candidates:
        pad = max_candidates - masks.shape[1]
        masks = F.pad(masks, (0, 0, 0, 0, 0, pad))
        valid = F.pad(valid, (0, pad))
        areas = F.pad(areas, (0, pad))

    xs = (torch.arange(width, device=logits.device, dtype=logits.dtype) + 0.5) / width
    ys = (torch.arange(height, device=logits.device, dtype=logits.dtype) + 0.5) / height
    area = masks.sum(dim=(2, 3)).clamp(min=1)
    column_any = masks.amax(dim=2)  # (B, K, W)
    row_any = masks.amax(dim=3)  # (B, K, H)
    cx = (masks.sum(dim=2) * xs).sum(dim=2) / area
    cy = (masks.sum(dim=3) * ys).sum(dim=2) / area
    left = torch.where(column_any > 0, xs, 2.0).amin(dim=2)
    right = torch.where(column_any > 0, xs, -1.0).amax(dim=2)
    top = torch.where(row_any > 0, ys, 2.0).amin(dim=2)
    bottom = torch.where(row_any > 0, ys, -1.0).amax(dim=2)
    probability = (masks * logits.sigmoid().unsqueeze(1)).sum(dim=(2, 3)) / area
    log_area = torch.log(area / (height * width))
    count = valid.sum(dim=1, keepdim=True).to(logits.dtype).expand_as(cx)
    geometry = torch.stack(
        [
            cx,
            cy,
            left,
            1 - right,
            top,
            1 - bottom,
            log_area / 10,
            _ranks(log_area, valid),
            _ranks(cx, valid),
            _ranks(cy, valid),
            probability,
            count / max_candidates,
        ],
        dim=2,
    )
    if ranks:
        codes = _rank_codes(torch.stack([cx, cy, log_area], dim=2), valid)
        geometry = torch.cat([geometry, codes], dim=2)
    geometry = geometry * valid.unsqueeze(2)
    centres = torch.stack([cx, cy], dim=2) * valid.unsqueeze(2)
    return Candidates(masks, valid, geometry, centres)


def _nearness_scales(num_heads: int) -> torch.Tensor:
    # Computed on the CPU even while a model is built on the meta device, where linspace's
    # checks import sympy (start-up); the checkpoint or training sets the values anyway.
    return torch.linspace(0.0, 24.0, num_heads, device="cpu")


class SelectorLayer(nn.Module):
    """Candidates attend to each other, to the words and to the visual tokens.

    With ``nearness``, attention to a visual token is biased by minus a per-head slope times
    its distance from the candidate's centre (slopes start at 0 ... 24 per tile width): some
    heads see the whole tile, others only the candidate's surroundings, which is where "the
    tank closest to the road" finds its road.

    Shapes:
        candidates ``(B, K, D)``, words ``(B, T, D)``, visual ``(B, N, D)`` -> ``(B, K, D)``.
    """

    def __init__(self, dim: int, num_heads: int, nearness: bool = False) -> None:
        super().__init__()
        self.distance_slopes = nn.Parameter(_nearness_scales(num_heads)) if nearness else None
        self.attentions = nn.ModuleList(
            nn.MultiheadAttention(dim, num_heads, batch_first=True) for _ in range(3)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.ffn = FeedForward(dim)

    def forward(
        self,
        candidates: torch.Tensor,
        valid: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor,
        visual: torch.Tensor,
        distances: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Updated candidate tokens (``distances``: ``(B, K, N)`` candidate to visual token)."""
        # Padding candidates keep attending (to valid ones) so no row is all-masked.
        sources = [
            (candidates, ~valid | ~valid.any(dim=1, keepdim=True)),
            (words, ~word_mask.bool()),
            (visual, None),
        ]
        bias = None
        if self.distance_slopes is not None and distances is not None:
            bias = -self.distance_slopes.view(1, -1, 1, 1) * distances.unsqueeze(1)
            bias = bias.flatten(0, 1).to(candidates.dtype)
        biases = [None, None, bias]
        for attention, norm, (source, padding), attn_mask in zip(
            self.attentions, self.norms, sources, biases, strict=False
        ):
            attended, _ = attention(
                candidates,
                source,
                source,
                key_padding_mask=padding,
                attn_mask=attn_mask,
                need_weights=False,
            )
            candidates = norm(candidates + attended)
        return self.norms[3](candidates + self.ffn(candidates))


class ObjectSelector(nn.Module):
    """Scores candidate objects against the expression and fades the ones not chosen.

    Args:
        dim: Width D.
        num_heads: Attention heads.
        text_dim: Width of the word features (projected to D).
        layers: Selector layers.
        max_candidates: Candidate objects per image (the largest regions).
        sharpness: Logits of a region drop by ``sharpness`` times its score's shortfall from
            the best candidate's.
        visual_pool: Pool the decoded visual map by this factor for the visual tokens.
        ranks: Candidates also carry their one-hot ranks from either end by x, y and size
            ("the second from the left", "the largest").
        nearness: Attention to the visual tokens falls with distance from the candidate
            (:class:`SelectorLayer`; "closest to the road").
        geometry_weights: The attention-pooled sentence also sets one weight per geometry
            feature, and each candidate's score gains its weighted geometry: "the leftmost" is
            minus x, "the second from the right" the rank-1-from-the-right code. A direct path
            that the transformer would otherwise have to learn through attention; it starts at
            zero.
        pixel_dim: Channels P of the mask head's pixel features (None: ``dim``).

    Shapes:
        logits ``(B, H, W)``, pixels ``(B, P, H, W)``, words ``(B, T, D_t)``, word mask
        ``(B, T)``, visual ``(B, D, H_v, W_v)`` -> selected logits ``(B, H, W)``, candidate
        scores ``(B, K)`` (:data:`PADDING_SCORE` for padding) and the :class:`Candidates`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        text_dim: int,
        layers: int = 2,
        max_candidates: int = 12,
        visual_pool: int = 2,
        sharpness: float = 1.0,
        ranks: bool = False,
        nearness: bool = False,
        geometry_weights: bool = False,
        pixel_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.ranks = ranks
        self.nearness = nearness
        features = GEOMETRY_FEATURES + (RANK_FEATURES if ranks else 0)
        self.max_candidates = max_candidates
        self.sharpness = sharpness
        self.visual_pool = visual_pool
        self.geometry = nn.Sequential(nn.Linear(features, dim), nn.GELU(), nn.Linear(dim, dim))
        self.appearance = nn.Linear(dim if pixel_dim is None else pixel_dim, dim)
        self.words = nn.Linear(text_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(SelectorLayer(dim, num_heads, nearness) for _ in range(layers))
        self.score = nn.Linear(dim, 1)
        self.word_pool: nn.Linear | None = None
        self.geometry_weights: nn.Sequential | None = None
        if geometry_weights:
            self.word_pool = nn.Linear(text_dim, 1)
            weights = nn.Linear(dim, features)
            nn.init.zeros_(weights.weight)
            nn.init.zeros_(weights.bias)
            self.geometry_weights = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), weights)

    def forward(
        self,
        logits: torch.Tensor,
        pixels: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor,
        visual: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, Candidates]:
        """Selected logits, candidate scores and candidates."""
        inputs, candidates = self.inputs(logits, pixels, words, word_mask, visual)
        scores = self.scores(inputs)
        return self.select(logits, scores, candidates), scores, candidates

    def select(
        self, logits: torch.Tensor, scores: torch.Tensor, candidates: Candidates
    ) -> torch.Tensor:
        """``logits`` with the regions not chosen faded by their scores' shortfall."""
        return logits + self.sharpness * fading(scores, candidates).to(logits.dtype)

    def inputs(
        self,
        logits: torch.Tensor,
        pixels: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor,
        visual: torch.Tensor,
    ) -> tuple[SelectionInputs, Candidates]:
        """The candidates of ``logits`` and what :meth:`scores` reads of them (no parameters)."""
        candidates = find_candidates(logits.detach().float(), self.max_candidates, self.ranks)
        masks = candidates.masks.to(pixels.dtype)
        area = masks.sum(dim=(2, 3)).clamp(min=1).unsqueeze(2)
        appearance = torch.einsum("bkhw,bdhw->bkd", masks, pixels) / area
        if self.visual_pool > 1:
            visual = F.avg_pool2d(visual, self.visual_pool)
        inputs = SelectionInputs(
            candidates.geometry,
            candidates.centres,
            candidates.valid,
            appearance,
            words,
            word_mask,
            visual,
        )
        return inputs, candidates

    def scores(self, inputs: SelectionInputs) -> torch.Tensor:
        """``(B, K)`` float32 candidate scores, :data:`PADDING_SCORE` for padding."""
        appearance = inputs.appearance
        dtype, dim = appearance.dtype, self.score.in_features
        geometry = inputs.geometry.to(dtype)
        tokens = (
            self.geometry(geometry)
            + self.appearance(appearance)
            + sine_encode(inputs.centres, dim).to(dtype)
        )
        tokens = self.norm(tokens)
        visual = inputs.visual.to(dtype)
        height, width = visual.shape[-2:]
        visual_tokens = visual.flatten(2).transpose(1, 2)
        visual_tokens = visual_tokens + sine_positions(height, width, dim, visual.device).to(dtype)
        distances = None
        if self.nearness:
            # In tile widths, from each candidate's centre to each visual token's.
            cells = cell_centres(height, width, visual.device)
            distances = torch.cdist(inputs.centres.float(), cells.expand(len(visual), -1, -1))
        plain_words = inputs.words.to(dtype)
        words = self.words(plain_words)
        for layer in self.layers:
            tokens = layer(tokens, inputs.valid, words, inputs.word_mask, visual_tokens, distances)
        scores = self.score(tokens)[..., 0].float()
        if self.word_pool is not None and self.geometry_weights is not None:
            padding = ~inputs.word_mask.bool()
            attention = self.word_pool(plain_words)[..., 0].float().masked_fill(padding, -1e4)
            sentence = (attention.softmax(dim=1).unsqueeze(2).to(dtype) * plain_words).sum(1)
            weights = self.geometry_weights(sentence).float()
            scores = scores + (inputs.geometry.float() * weights.unsqueeze(1)).sum(dim=2)
        return scores.masked_fill(~inputs.valid, PADDING_SCORE)


def fading(scores: torch.Tensor, candidates: Candidates) -> torch.Tensor:
    """``(B, H, W)``: each region's score shortfall from the best candidate, 0 elsewhere.

    0 for the chosen region (and for a lone candidate), negative for the objects not meant;
    the selected logits are the logits plus ``sharpness`` times this map.
    """
    best = scores.amax(dim=1, keepdim=True)
    shortfall = torch.where(candidates.valid, scores - best, torch.zeros_like(scores))
    return torch.einsum("bk,bkhw->bhw", shortfall, candidates.masks.to(shortfall.dtype))


def referent_candidates(
    candidates: Candidates, target: torch.Tensor, min_iou: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the candidate that best overlaps the target, and whether it overlaps enough.

    A target of two or more separate parts (at the candidates' resolution) has no referent
    among the candidates: it names several objects ("The ship." over every ship of the
    image), and choosing one of them would teach the selector a choice the sentence did not
    make.

    Args:
        candidates: Candidates of B images.
        target: ``(B, H_t, W_t)`` target masks (any resolution; resized to the candidates').
        min_iou: Least IoU for the best candidate to count as the referent's.

    Returns:
        ``(B,)`` candidate indices and ``(B,)`` bools (False: the mask missed the referent,
        there is none, or the target holds several objects).
    """
    masks = candidates.masks.float()
    size = masks.shape[-2:]
    target = target.float().unsqueeze(1)
    if target.shape[-2:] != size:
        target = F.adaptive_avg_pool2d(target, (size[0], size[1]))
    intersection = (masks * target).sum(dim=(2, 3))
    union = masks.sum(dim=(2, 3)) + target.sum(dim=(2, 3)) - intersection
    iou = torch.where(candidates.valid, intersection / union.clamp(min=1e-6), -1.0)
    best_iou, best = iou.max(dim=1)
    return best, (best_iou >= min_iou) & (_part_count(target[:, 0] > 0.5) <= 1)


def _part_count(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` number of 8-connected parts of ``(B, H, W)`` booleans."""
    labels = connected_components(mask).flatten(1)
    # A part's id is its largest flat index + 1: the pixel holding its own id is its last.
    own = torch.arange(1, labels.shape[1] + 1, device=labels.device)
    return (labels == own).sum(dim=1)


def selection_loss(
    scores: torch.Tensor,
    candidates: Candidates,
    target: torch.Tensor,
    present: torch.Tensor | None = None,
    min_iou: float = 0.3,
) -> torch.Tensor:
    """Cross-entropy towards the candidate that best overlaps the target mask.

    Images whose referent is absent, or whose best candidate overlaps the target by less than
    ``min_iou`` (the mask missed it: nothing to choose), do not count.

    Args:
        scores: ``(B, K)`` candidate scores (:data:`PADDING_SCORE` for padding).
        candidates: The candidates they score.
        target: ``(B, H_t, W_t)`` target masks (any resolution; resized to the candidates').
        present: ``(B,)`` in {0, 1}, optional.
        min_iou: Least overlap for a candidate to be a target.
    """
    best, counted = referent_candidates(candidates, target, min_iou)
    if present is not None:
        counted &= present.bool()
    if not counted.any():
        return scores.sum() * 0.0
    return F.cross_entropy(scores[counted], best[counted])
