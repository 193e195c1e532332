"""The derived tables of hac_jax/report/tables.py (targets, differences to a reference row,
distances to Retrain) and the model style table, on hand-checkable aggregates."""

from __future__ import annotations

import pytest

from hac_jax.report import make_results, make_run, styles, tables

SNEAKER, TWO = ["sneaker"], ["sneaker", "bag"]
DEST = ("own_class", "sibling", "parent", "root", "other")


def _run(forget, row, seed, fa, ra, mia, dest, examples):
    metrics = {"FA": fa, "RA": ra, "mia_forget_nonmember": mia}
    metrics |= {f"dest_{d}": share for d, share in zip(DEST, dest, strict=True)}
    return make_run(
        forget=forget,
        row=row,
        seed=seed,
        metrics=metrics,
        steps=0,
        seconds=1.0,
        examples=examples,
    )


@pytest.fixture(scope="module")
def agg():
    runs = [
        _run(SNEAKER, "original", 0, 0.90, 0.80, 0.02, (0.9, 0.05, 0.05, 0, 0), 0),
        _run(SNEAKER, "retrain", 0, 0.0, 0.84, 0.80, (0, 0.9, 0.1, 0, 0), 384000),
        _run(SNEAKER, "retrain", 1, 0.0, 0.86, 0.70, (0, 0.8, 0.2, 0, 0), 384000),
        _run(SNEAKER, "hac", 0, 0.01, 0.82, 1.0, (0, 0.1, 0.9, 0, 0), 1600),
        _run(SNEAKER, "hac", 1, 0.03, 0.84, 1.0, (0, 0.1, 0.9, 0, 0), 1600),
        _run(TWO, "original", 0, 0.95, 0.78, 0.10, (0.9, 0.1, 0, 0, 0), 0),
        _run(TWO, "hac", 0, 0.40, 0.80, 1.0, (0.4, 0.2, 0.4, 0, 0), 1600),
    ]
    data = make_results(model="meru", class_names=["sneaker", "bag", "coat"], runs=runs)
    return tables.aggregate([data])


def _lines(table):
    return table.splitlines()


def test_targets_table(agg):
    targets = [
        tables.Target.parse(t)
        for t in (
            "FA<=retrain+3",
            "RA>=retrain-1",
            "mia_forget_nonmember=retrain+-10",
            "compute<=2",
        )
    ]
    header, rule, k1, k2 = _lines(tables.targets_table(agg, targets))
    assert header == (
        "| forget set | model / row | FA (%) | FA ≤ Retrain + 3 | RA (%) | RA ≥ Retrain - 1 "
        "| mia_forget_nonmember (%) | mia_forget_nonmember = Retrain ± 10 "
        "| compute vs retrain (%) | compute vs retrain (%) ≤ 2 | targets met |"
    )
    assert rule == "|---|---|" + "---:|" * 9
    # FA 2.0 vs 0.0; RA 83.0 vs 85.0 (bound 84); MIA 100 vs 75; compute 1600 / 384000 = 0.42%
    assert k1 == (
        "| sneaker (k=1) | meru / hac | 2.0 ± 1.4 | +2.0 (met) | 83.0 ± 1.4 | -2.0 (missed) "
        "| 100.0 ± 0.0 | +25.0 (missed) | 0.4 | 0.4 (met) | 2/4 |"
    )
    # no Retrain for this forget set: nothing to compare with
    assert k2 == (
        "| sneaker, bag (k=2) | meru / hac | 40.0 | n/a | 80.0 | n/a | 100.0 | n/a "
        "| n/a | n/a | 0/4 |"
    )


@pytest.mark.parametrize(
    ("text", "relation", "bound", "vs_retrain"),
    [
        ("FA<=retrain+2", "<=", 2.0, True),
        ("RA>=retrain-2.5", ">=", -2.5, True),
        ("FA<=retrain", "<=", 0.0, True),
        ("mia_forget_nonmember=retrain+-10", "within", 10.0, True),
        ("compute<=2", "<=", 2.0, False),
        ("ret_i2t_R@1>=-0.5", ">=", -0.5, False),
    ],
)
def test_target_parse(text, relation, bound, vs_retrain):
    target = tables.Target.parse(text)
    assert (target.relation, target.bound, target.vs_retrain) == (relation, bound, vs_retrain)


@pytest.mark.parametrize(
    "text", ["FA<retrain", "FA=retrain+2", "FA<=retrain+-2", "FA<=abc", "FA=2"]
)
def test_target_parse_refuses(text):
    with pytest.raises(ValueError, match="target"):
        tables.Target.parse(text)


def test_target_met_at_the_bounds():
    within = tables.Target.parse("FA=retrain+-10")
    assert within.met(15.0, 5.0) and within.met(-5.0, 5.0) and not within.met(15.5, 5.0)
    assert within.met(1.0, None) is None
    assert tables.Target.parse("RA>=retrain-2").met(83.0, 85.0)
    assert not tables.Target.parse("RA>=retrain-2").met(82.9, 85.0)


def test_delta_table(agg):
    table = tables.delta_table(agg, ["RA"], values=["FA"])
    header, _, k1, k2 = _lines(table)
    assert header == (
        "| forget set | meru / retrain: FA (%) | meru / retrain: ΔRA vs original "
        "| meru / hac: FA (%) | meru / hac: ΔRA vs original |"
    )
    # RA: retrain 85.0, hac 83.0 against the original's 80.0 (k=1) and 78.0 (k=2)
    assert k1 == "| sneaker (k=1) | 0.0 ± 0.0 | +5.0 | 2.0 ± 1.4 | +3.0 |"
    assert k2 == "| sneaker, bag (k=2) | n/a | n/a | 40.0 | +2.0 |"
    only_hac = tables.delta_table(agg, ["RA", "FA"], reference="retrain", rows=["meru/hac"])
    assert _lines(only_hac)[2] == "| sneaker (k=1) | -2.0 | +2.0 |"
    with pytest.raises(ValueError, match="reference row 'ft'"):
        tables.delta_table(agg, ["RA"], reference="ft")


def test_distance_table(agg):
    header, _, k1, k2 = _lines(tables.distance_table(agg))
    # align_gap_forget and cone_own_retain are in no run: their columns are dropped
    assert header == (
        "| forget set | model / row | FA vs Retrain (pts) | RA vs Retrain (pts) "
        "| mia_forget_nonmember vs Retrain (pts) | destination TV |"
    )
    # destinations (own, sibling, parent): hac (0, 10, 90)% vs Retrain (0, 85, 15)%: TV 0.75
    assert k1 == "| sneaker (k=1) | meru / hac | 2.0 | 2.0 | 25.0 | 0.750 |"
    assert k2 == "| sneaker, bag (k=2) | meru / hac | n/a | n/a | n/a | n/a |"


def test_select_entries(agg):
    chosen = tables.select_entries(agg, ["hac", "meru/original"])
    assert [(e["k"], e["row"]) for e in chosen] == [
        (1, "hac"),
        (1, "original"),
        (2, "hac"),
        (2, "original"),
    ]
    assert [e["row"] for e in tables.select_entries(agg, None, exclude=["original"])] == [
        "retrain",
        "hac",
        "hac",
    ]
    with pytest.raises(ValueError, match="row 'clip/hac' is in none of the results"):
        tables.select_entries(agg, ["clip/hac"])


def test_models_are_ordered_by_the_style_table():
    runs = [_run(SNEAKER, "original", 0, 0.9, 0.8, 0.0, (1, 0, 0, 0, 0), 0)]
    files = [
        make_results(model=m, class_names=["sneaker", "bag"], runs=runs)
        for m in ("zeta", "meru", "alpha", "clip")
    ]
    assert [e["model"] for e in tables.aggregate(files)] == ["clip", "meru", "alpha", "zeta"]
    assert styles.model_style("clip").line_style == "--"
    assert styles.model_style("a-new-model") == styles.DEFAULT_STYLE


def test_choose_columns():
    assert tables.choose_columns("") == tables.DEFAULT_COLUMNS
    assert tables.choose_columns("hierarchy") == tables.HIERARCHY_COLUMNS
    assert tables.choose_columns(" FA, RA ,") == ("FA", "RA")
