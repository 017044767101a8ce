import csv
import io
import itertools
import json
import pickle

import numpy as np
import pytest

from rrsis_geo.training.metrics import MetricResult, Protocol, RunningMetrics


def mask(picture: str) -> np.ndarray:
    """A boolean mask drawn with ``#`` (set) and ``.`` (clear), one text line per row."""
    rows = [line.strip() for line in picture.strip().splitlines()]
    return np.array([[c == "#" for c in row] for row in rows], dtype=bool)


EMPTY = mask("....\n....\n....\n....")

# Four expressions on 4 x 4 masks, with intersection I and union U counted by hand.
# 1. target rows 0-1 (8 px), prediction row 0 (4 px): I = 4, U = 8, IoU = 0.5
HALF = (
    mask("####\n....\n....\n...."),
    mask("####\n####\n....\n...."),
)
# 2. target row 0 (4 px), prediction its first 3 px: I = 3, U = 4, IoU = 0.75
THREE_QUARTERS = (
    mask("###.\n....\n....\n...."),
    mask("####\n....\n....\n...."),
)
# 3. prediction == target, 2 px: I = 2, U = 2, IoU = 1
PERFECT = (
    mask("....\n.##.\n....\n...."),
    mask("....\n.##.\n....\n...."),
)
# 4. empty target, 6 predicted px: I = 0, U = 6, IoU = 0
FALSE_ALARM = (
    mask("....\n....\n###.\n###."),
    EMPTY,
)
# 5. both empty: I = 0, U = 0, IoU = 1 under the default empty rule
BOTH_EMPTY = (EMPTY, EMPTY)
# 6. empty prediction, 3 target px: I = 0, U = 3, IoU = 0
MISSED = (
    EMPTY,
    mask("#...\n#...\n#...\n...."),
)


def run(pairs, protocol=None, categories=None, ids=None):
    metrics = RunningMetrics(protocol)
    for k, (prediction, target) in enumerate(pairs):
        metrics.update(
            prediction,
            target,
            category=None if categories is None else categories[k],
            sample_id=None if ids is None else ids[k],
        )
    return metrics


FOUR = [HALF, THREE_QUARTERS, PERFECT, FALSE_ALARM]


def test_hand_counted_ious():
    metrics = RunningMetrics()
    assert metrics.update(*HALF) == 0.5
    assert metrics.update(*THREE_QUARTERS) == 0.75
    assert metrics.update(*PERFECT) == 1.0
    assert metrics.update(*FALSE_ALARM) == 0.0
    assert metrics.update(*BOTH_EMPTY) == 1.0
    assert metrics.update(*MISSED) == 0.0
    assert [(r["intersection"], r["union"]) for r in metrics.records()] == [
        (4, 8),
        (3, 4),
        (2, 2),
        (0, 6),
        (0, 0),
        (0, 3),
    ]


def test_greater_or_equal_counts_ious_equal_to_the_threshold():
    result = run(FOUR).compute()
    # IoUs 0.5, 0.75, 1, 0
    assert result.count == 4
    assert result.both_empty == 0
    assert result.oiou == 9 / 20  # (4 + 3 + 2 + 0) / (8 + 4 + 2 + 6)
    assert result.miou == 0.5625  # (0.5 + 0.75 + 1 + 0) / 4
    # >=: 0.5 -> {0.5, 0.75, 1}; 0.6, 0.7 -> {0.75, 1}; 0.8, 0.9 -> {1}
    assert result.precision == {0.5: 0.75, 0.6: 0.5, 0.7: 0.5, 0.8: 0.25, 0.9: 0.25}
    assert result.category_miou is None
    assert result.per_category == {}


def test_strictly_greater_drops_ious_equal_to_the_threshold():
    result = run(FOUR, Protocol(threshold_op=">")).compute()
    # >: 0.5 loses the IoU of exactly 0.5
    assert result.precision == {0.5: 0.5, 0.6: 0.5, 0.7: 0.5, 0.8: 0.25, 0.9: 0.25}
    # oIoU and mIoU do not depend on the threshold
    assert (result.oiou, result.miou) == (0.45, 0.5625)


@pytest.mark.parametrize(
    ("op", "expected"),
    [(">=", {0.5: 0.75, 0.75: 0.5}), (">", {0.5: 0.5, 0.75: 0.25})],
)
def test_custom_thresholds_on_exact_ties(op, expected):
    # IoUs 0.5, 0.75, 1, 0: both thresholds hit an IoU exactly
    result = run(FOUR, Protocol(threshold_op=op, thresholds=(0.5, 0.75))).compute()
    assert result.precision == expected


def test_both_empty_scores_one_and_is_counted():
    result = run([BOTH_EMPTY, HALF]).compute()
    assert result.both_empty == 1
    assert result.miou == 0.75  # (1 + 0.5) / 2
    assert result.oiou == 0.5  # (0 + 4) / (0 + 8): the empty pair adds nothing to the sums
    assert result.precision[0.5] == 1.0
    assert result.precision[0.9] == 0.5


def test_all_empty_gives_oiou_of_one():
    result = run([BOTH_EMPTY, BOTH_EMPTY]).compute()
    assert (result.count, result.both_empty) == (2, 2)
    assert (result.oiou, result.miou) == (1.0, 1.0)
    assert set(result.precision.values()) == {1.0}


def test_empty_rule_zero_for_reproducing_other_code():
    protocol = Protocol(empty_rule="both_empty_is_0")
    result = run([BOTH_EMPTY, HALF], protocol).compute()
    assert result.both_empty == 1
    assert result.miou == 0.25  # (0 + 0.5) / 2
    assert result.oiou == 0.5
    assert run([BOTH_EMPTY], protocol).compute().oiou == 0.0


def test_one_empty_side_scores_zero():
    result = run([FALSE_ALARM, MISSED]).compute()
    assert result.both_empty == 0
    assert (result.oiou, result.miou) == (0.0, 0.0)
    assert set(result.precision.values()) == {0.0}


CATEGORY_PAIRS = [HALF, PERFECT, FALSE_ALARM, THREE_QUARTERS, BOTH_EMPTY]
CATEGORIES = ["building", "building", "road", "road", "vehicle"]


def test_categories():
    result = run(CATEGORY_PAIRS, categories=CATEGORIES).compute()
    # building: IoU 0.5 (4/8) and 1 (2/2); road: 0 (0/6) and 0.75 (3/4); vehicle: both empty
    assert list(result.per_category) == ["building", "road", "vehicle"]
    building = result.per_category["building"]
    assert (building["count"], building["both_empty"]) == (2, 0)
    assert building["miou"] == 0.75
    assert building["oiou"] == 0.6  # 6 / 10
    assert building["precision"] == {0.5: 1.0, 0.6: 0.5, 0.7: 0.5, 0.8: 0.5, 0.9: 0.5}
    road = result.per_category["road"]
    assert (road["count"], road["miou"], road["oiou"]) == (2, 0.375, 0.3)  # oIoU 3 / 10
    vehicle = result.per_category["vehicle"]
    assert (vehicle["count"], vehicle["both_empty"], vehicle["miou"], vehicle["oiou"]) == (
        1,
        1,
        1.0,
        1.0,
    )
    assert result.category_miou == 17 / 24  # (0.75 + 0.375 + 1) / 3
    assert result.miou == 0.65  # (0.5 + 1 + 0 + 0.75 + 1) / 5
    assert result.oiou == 0.45  # 9 / 20
    assert result.both_empty == 1


def test_expressions_without_category_count_only_overall():
    result = run([HALF, PERFECT], categories=["building", None]).compute()
    assert result.count == 2
    assert result.miou == 0.75
    assert list(result.per_category) == ["building"]
    assert result.category_miou == 0.5


def random_pairs(count, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(count):
        shape = (int(rng.integers(3, 9)), int(rng.integers(3, 9)))
        prediction = rng.random(shape) < rng.random()
        target = rng.random(shape) < rng.random()
        if k % 7 == 0:  # some empty masks
            prediction[:] = False
            target[:] = k % 14 != 0
        pairs.append((prediction, target))
    categories = [("a", "b", "c")[k % 3] for k in range(count)]
    ids = [f"s{k}" for k in range(count)]
    return pairs, categories, ids


def test_merge_and_state_round_trip_equal_one_run():
    pairs, categories, ids = random_pairs(40)
    protocol = Protocol(threshold_op=">")
    single = run(pairs, protocol, categories, ids).compute()
    assert single.both_empty == 3  # k = 0, 14, 28

    cuts = [0, 7, 19, 40]
    parts = [
        run(pairs[a:b], protocol, categories[a:b], ids[a:b]) for a, b in itertools.pairwise(cuts)
    ]
    # merged in another order than the expressions arrived
    merged = RunningMetrics(protocol).merge(parts[2]).merge(parts[0]).merge(parts[1])
    assert merged.compute() == single
    assert merged.compute().to_dict() == single.to_dict()

    # what all_gather_object does: pickle; and a JSON round trip of the plain state
    states = [pickle.loads(pickle.dumps(part.state())) for part in parts]
    states = [json.loads(json.dumps(state)) for state in states]
    assert RunningMetrics.from_states(states[::-1]).compute() == single
    rebuilt = RunningMetrics.from_state(json.loads(json.dumps(merged.state())))
    assert rebuilt.protocol == protocol
    assert rebuilt.compute() == single


def test_padded_ranks_duplicates_are_dropped_or_refused():
    pairs, categories, ids = random_pairs(10)
    single = run(pairs, categories=categories, ids=ids).compute()
    # like DistributedSampler padding: the second rank repeats sample 0 at its end
    first = run(pairs[:5], categories=categories[:5], ids=ids[:5])
    second = run(
        pairs[5:] + pairs[:1], categories=categories[5:] + categories[:1], ids=ids[5:] + ids[:1]
    )
    with pytest.raises(ValueError, match="'s0'"):
        RunningMetrics.from_states([first.state(), second.state()])
    total = RunningMetrics.from_states([first.state(), second.state()], duplicates="drop")
    assert len(total) == 10
    assert total.compute() == single


def test_update_refuses_a_repeated_sample_id():
    metrics = RunningMetrics()
    metrics.update(*HALF, sample_id="x")
    with pytest.raises(ValueError, match="already counted"):
        metrics.update(*PERFECT, sample_id="x")
    assert len(metrics) == 1


def test_merge_refuses_another_protocol():
    with pytest.raises(ValueError, match="different protocols"):
        run([HALF]).merge(run([HALF], Protocol(threshold_op=">")))


def test_table_states_the_protocol_first_and_reports_percent():
    result = run(CATEGORY_PAIRS, categories=CATEGORIES).compute()
    lines = result.to_table().splitlines()
    assert lines[0] == (
        "protocol: resolution=original; Pr@X counts IoU >= X for X in {0.5, 0.6, 0.7, 0.8, 0.9}; "
        "empty_rule=both_empty_is_1 (prediction and target both empty -> IoU 1); "
        "both empty: 1 of 5 expressions"
    )
    assert lines[1] == ""
    assert lines[2] == "| subset | n | Pr@0.5 | Pr@0.6 | Pr@0.7 | Pr@0.8 | Pr@0.9 | oIoU | mIoU |"
    # IoUs 0.5, 1, 0, 0.75, 1
    assert lines[4] == "| all | 5 | 80.00 | 60.00 | 60.00 | 40.00 | 40.00 | 45.00 | 65.00 |"
    assert lines[5] == "| building | 2 | 100.00 | 50.00 | 50.00 | 50.00 | 50.00 | 60.00 | 75.00 |"
    assert lines[6] == "| road | 2 | 50.00 | 50.00 | 50.00 | 0.00 | 0.00 | 30.00 | 37.50 |"
    assert (
        lines[7] == "| vehicle | 1 | 100.00 | 100.00 | 100.00 | 100.00 | 100.00 | 100.00 | 100.00 |"
    )
    assert lines[9] == "category mIoU: 70.83 (mean of 3 per-category mIoUs)"
    assert lines[8] == ""
    assert len(lines) == 10
    assert str(result) == result.to_table()

    fractions = run(FOUR, Protocol(resolution="model_input", threshold_op=">")).compute()
    lines = fractions.to_table(percent=False).splitlines()
    assert lines[0].startswith("protocol: resolution=model_input; Pr@X counts IoU > X")
    assert lines[4] == "| all | 4 | 0.5000 | 0.5000 | 0.5000 | 0.2500 | 0.2500 | 0.4500 | 0.5625 |"
    assert len(lines) == 5


def test_dict_and_csv_rows():
    result = run(CATEGORY_PAIRS, categories=CATEGORIES).compute()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["protocol"] == {
        "resolution": "original",
        "threshold_op": ">=",
        "thresholds": [0.5, 0.6, 0.7, 0.8, 0.9],
        "empty_rule": "both_empty_is_1",
    }
    assert (data["count"], data["both_empty"], data["oiou"], data["miou"]) == (5, 1, 0.45, 0.65)
    assert data["precision"] == {"0.5": 0.8, "0.6": 0.6, "0.7": 0.6, "0.8": 0.4, "0.9": 0.4}
    assert data["category_miou"] == 17 / 24
    assert data["per_category"]["road"] == {
        "count": 2,
        "both_empty": 0,
        "oiou": 0.3,
        "miou": 0.375,
        "precision": {"0.5": 0.5, "0.6": 0.5, "0.7": 0.5, "0.8": 0.0, "0.9": 0.0},
    }

    rows = result.to_csv_rows()
    assert [row["subset"] for row in rows] == [
        "all",
        "building",
        "road",
        "vehicle",
        "category_mean",
    ]
    assert rows[0] == {
        "subset": "all",
        "count": 5,
        "both_empty": 1,
        "pr@0.5": 0.8,
        "pr@0.6": 0.6,
        "pr@0.7": 0.6,
        "pr@0.8": 0.4,
        "pr@0.9": 0.4,
        "oiou": 0.45,
        "miou": 0.65,
        "resolution": "original",
        "threshold_op": ">=",
        "empty_rule": "both_empty_is_1",
    }
    assert rows[-1]["miou"] == 17 / 24
    assert (rows[-1]["count"], rows[-1]["both_empty"], rows[-1]["oiou"], rows[-1]["pr@0.5"]) == (
        5,
        1,
        "",
        "",
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    assert buffer.getvalue().splitlines()[2].startswith("building,2,0,1.0,0.5,")


def test_protocol_validation_and_round_trip():
    protocol = Protocol(resolution="model_input", threshold_op=">", thresholds=[0.5, 0.75])
    assert protocol.thresholds == (0.5, 0.75)
    assert Protocol.from_dict(json.loads(json.dumps(protocol.to_dict()))) == protocol
    for bad in (
        {"resolution": "480"},
        {"threshold_op": "=>"},
        {"empty_rule": "skip"},
        {"thresholds": ()},
        {"thresholds": (0.5, 1.5)},
        {"thresholds": (0.7, 0.5)},
        {"thresholds": (0.5, 0.5)},
    ):
        with pytest.raises(ValueError):
            Protocol(**bad)


def test_update_rejects_ambiguous_masks():
    metrics = RunningMetrics()
    with pytest.raises(TypeError, match="boolean"):
        metrics.update(HALF[0].astype(np.uint8), HALF[1])
    with pytest.raises(TypeError, match="boolean"):
        metrics.update(HALF[0], HALF[1].astype(np.float32))
    with pytest.raises(ValueError, match="2-D"):
        metrics.update(HALF[0][None], HALF[1][None])
    with pytest.raises(ValueError, match="differs"):
        metrics.update(HALF[0], HALF[1][:3])
    with pytest.raises(TypeError, match="category"):
        metrics.update(*HALF, category=3)
    assert len(metrics) == 0
    with pytest.raises(ValueError, match="no expressions"):
        metrics.compute()


def test_malformed_state_is_refused():
    state = run([HALF, PERFECT]).state()
    assert state["intersections"] == [4, 2] and state["unions"] == [8, 2]
    for key, value in (
        ("version", 99),
        ("unions", [8]),
        ("intersections", [9, 2]),
        ("unions", [8.0, 2.0]),
    ):
        broken = dict(state, **{key: value})
        with pytest.raises(ValueError):
            RunningMetrics.from_state(broken)


def test_result_is_a_plain_dataclass():
    result = run([HALF]).compute()
    assert isinstance(result, MetricResult)
    assert result.protocol == Protocol()
