"""The ship/no-ship decision: significance from paired CIs, best mean, near-tie rules, plain 'no'."""

from __future__ import annotations

import json

from report_fakes import copy_eval, make_run

from qatune.report.html import build
from qatune.report.recommend import recommend, val_loss_trend
from qatune.train.state import TrainSummary


def _scores(
    models: dict[str, dict[str, tuple[float, float, float]]], *, n: int = 40, stop_rate: dict[str, float] | None = None
) -> dict:
    """models: {name: {metric: (mean, diff_lo, diff_hi)}}; base means are 0.2 for every metric."""
    out = {
        "n": n,
        "metrics": ["rougeL", "semantic"],
        "models": {"base": {m: {"mean": 0.2, "ci95": [0.15, 0.25]} for m in ("rougeL", "semantic")}},
        "kinds": {"base": "base"},
        "comparisons": {},
        "stop_rate": {"base": 0.5},
    }
    for name, metrics in models.items():
        out["kinds"][name] = "baseline" if name == "retrieval" else "fine-tuned"
        out["models"][name] = {m: {"mean": v[0], "ci95": [v[0] - 0.05, v[0] + 0.05]} for m, v in metrics.items()}
        out["comparisons"][name] = {
            m: {"diff": v[0] - 0.2, "ci95": [v[1], v[2]], "p": 0.01 if v[1] > 0 else 0.4} for m, v in metrics.items()
        }
        out["stop_rate"][name] = (stop_rate or {}).get(name, 1.0)
    return out


def _summary(losses: dict[int, float], best: int | None = None) -> TrainSummary:
    return TrainSummary(
        eval_loss_by_epoch={str(k): v for k, v in losses.items()},
        best_epoch=best if best is not None else min(losses, key=losses.get),
    )


def test_picks_the_significantly_better_model_with_the_best_mean():
    scores = _scores(
        {
            "epoch-3": {"rougeL": (0.35, 0.05, 0.25), "semantic": (0.5, 0.1, 0.4)},
            "epoch-6": {"rougeL": (0.60, -0.1, 0.9), "semantic": (0.6, -0.1, 0.9)},  # higher mean, CI spans 0
            "epoch-4": {"rougeL": (0.45, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)},
        }
    )
    rec = recommend(scores, _summary({3: 1.0, 4: 0.9, 6: 1.1}))
    assert rec["model"] == "epoch-4" and rec["verdict"] == "ship"
    assert rec["reason"].startswith("Ship epoch-4")
    assert {c["model"]: c["significant"] for c in rec["evidence"]["candidates"]} == {
        "epoch-3": True,
        "epoch-4": True,
        "epoch-6": False,
    }


def test_says_no_when_no_model_is_significant():
    scores = _scores(
        {
            "epoch-1": {"rougeL": (0.3, -0.02, 0.2), "semantic": (0.3, -0.05, 0.25)},
            "epoch-2": {"rougeL": (0.25, -0.1, 0.2), "semantic": (0.2, -0.1, 0.1)},
        }
    )
    rec = recommend(scores, None)
    assert rec["model"] is None and rec["verdict"] == "ship-nothing"
    assert rec["reason"].startswith("Ship nothing yet") and "closest: epoch-1" in rec["reason"]


def test_retrieval_beats_fine_tuning_is_said_plainly():
    scores = _scores(
        {
            "retrieval": {"rougeL": (0.5, 0.2, 0.4), "semantic": (0.5, 0.2, 0.4)},
            "epoch-1": {"rougeL": (0.25, -0.05, 0.15), "semantic": (0.25, -0.05, 0.15)},
        }
    )
    rec = recommend(scores, None)
    assert rec["model"] is None and rec["verdict"] == "retrieval-beats-fine-tuning"
    assert "Retrieval beats fine-tuning" in rec["reason"]


def test_significantly_worse_on_one_primary_metric_disqualifies():
    scores = _scores({"epoch-2": {"rougeL": (0.5, 0.1, 0.4), "semantic": (0.1, -0.2, -0.05)}})
    assert recommend(scores, None)["model"] is None


def test_near_tie_goes_to_lower_validation_loss_then_fewer_epochs():
    tied = {"rougeL": (0.500, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}
    close = {"rougeL": (0.495, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}
    scores = _scores({"epoch-4": close, "epoch-8": tied})
    assert recommend(scores, _summary({4: 0.80, 8: 0.95}))["model"] == "epoch-4"  # lower val loss
    assert recommend(scores, _summary({4: 0.95, 8: 0.80}))["model"] == "epoch-8"
    rec = recommend(scores, _summary({4: 0.900, 8: 0.899}))  # val losses equal within 1%: fewer epochs
    assert rec["model"] == "epoch-4" and "within 0.01 ROUGE-L" in rec["evidence"]["notes"][0]
    far = _scores({"epoch-4": {"rougeL": (0.40, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}, "epoch-8": tied})
    assert recommend(far, _summary({4: 0.8, 8: 0.95}))["model"] == "epoch-8"  # not a tie: best mean wins


def test_best_alias_is_reported_as_its_epoch():
    same = {"rougeL": (0.5, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}
    rec = recommend(_scores({"epoch-2": same, "best": same}), _summary({1: 1.0, 2: 0.8}))
    assert rec["model"] == "epoch-2"
    assert [c["model"] for c in rec["evidence"]["candidates"]] == ["epoch-2"]


def test_notes_cover_small_n_val_loss_trend_and_stop_rate():
    scores = _scores(
        {"epoch-3": {"rougeL": (0.5, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}}, n=12, stop_rate={"epoch-3": 0.6}
    )
    notes = recommend(scores, _summary({1: 1.2, 3: 0.9, 6: 1.1}))["evidence"]["notes"]
    assert any("only 12 held-out questions" in n for n in notes)
    assert any("rose to 1.100 by epoch 6: later epochs overfit" in n for n in notes)
    assert any("only 60% of epoch-3's answers" in n for n in notes)


def test_val_loss_trend_wording():
    assert val_loss_trend(None) is None
    assert "still falling" in val_loss_trend(_summary({1: 1.0, 2: 0.9}))
    assert "stayed flat" in val_loss_trend(_summary({1: 1.0, 2: 0.9, 3: 0.905}))


def test_no_scores_means_no_recommendation():
    assert recommend(None, None)["verdict"] == "no-evaluation"
    assert recommend({"models": {}}, None)["model"] is None


def test_report_writes_the_decision_for_real_files(tmp_path, scored_run):
    run = make_run(tmp_path, scored_run)
    build(run)
    rec = json.loads((run / "report" / "recommendation.json").read_text())
    assert rec["model"] == "epoch-2" and set(rec) >= {"model", "reason", "evidence"}
    copy_eval(run, scored_run, "lookup", "test")  # the training questions: the lookup answers them all
    build(run)
    rec = json.loads((run / "report" / "recommendation.json").read_text())
    assert rec["model"] is None and rec["reason"].startswith("Ship nothing yet")
    assert rec["verdict"] == "retrieval-beats-fine-tuning"
    assert "Ship nothing yet — retrieval beats fine-tuning" in (run / "report" / "report.html").read_text()


def _with_retrieval(scores: dict, mean: float, vs: dict[str, tuple[float, float, float]]) -> dict:
    """Adds the retrieval baseline (mean ROUGE-L `mean`) and each model's paired (diff, lo, hi) against it."""
    scores["models"]["retrieval"] = {
        m: {"mean": mean, "ci95": [mean - 0.1, mean + 0.1]} for m in ("rougeL", "semantic")
    }
    scores["kinds"]["retrieval"] = "baseline"
    scores["vs_retrieval"] = {m: {"rougeL": {"diff": d, "ci95": [lo, hi], "p": 0.01}} for m, (d, lo, hi) in vs.items()}
    return scores


def test_retrieval_is_recommended_when_it_beats_the_best_model_significantly():
    scores = _scores({"epoch-3": {"rougeL": (0.40, 0.1, 0.3), "semantic": (0.5, 0.1, 0.4)}})
    rec = recommend(_with_retrieval(scores, 0.70, {"epoch-3": (-0.30, -0.4, -0.2)}), _summary({3: 1.0}))
    assert rec["model"] is None and rec["verdict"] == "retrieval-beats-fine-tuning"
    assert rec["reason"].startswith("Ship retrieval") and "-0.30" in rec["reason"]


def test_a_model_ships_when_retrieval_is_ahead_only_within_the_noise():
    scores = _scores({"epoch-3": {"rougeL": (0.60, 0.3, 0.5), "semantic": (0.5, 0.1, 0.4)}})
    rec = recommend(_with_retrieval(scores, 0.65, {"epoch-3": (-0.05, -0.15, 0.05)}), _summary({3: 1.0}))
    assert rec["model"] == "epoch-3" and rec["verdict"] == "ship"
    assert "retrieval beats fine-tuning on mean ROUGE-L" in rec["reason"]


def test_a_grounded_model_can_be_the_one_to_ship_and_the_reason_says_how_it_answers():
    scores = _scores(
        {
            "epoch-3": {"rougeL": (0.45, 0.2, 0.3), "semantic": (0.5, 0.1, 0.4)},
            "best+rag": {"rougeL": (0.80, 0.5, 0.7), "semantic": (0.8, 0.5, 0.7)},
        }
    )
    rec = recommend(_with_retrieval(scores, 0.70, {"best+rag": (0.10, 0.02, 0.18)}), _summary({3: 1.0}, best=3))
    assert rec["model"] == "best+rag" and rec["verdict"] == "ship"
    assert "grounded: it answers with retrieved training pairs" in rec["reason"]
    assert {c["model"]: c["grounded"] for c in rec["evidence"]["candidates"]} == {"epoch-3": False, "best+rag": True}


def test_a_ci_that_touches_zero_is_not_significant():
    """Significant means the paired CI's low end is above zero: exactly 0 is not enough."""
    touching = _scores({"epoch-2": {"rougeL": (0.5, 0.0, 0.4), "semantic": (0.5, 0.0, 0.3)}})
    rec = recommend(touching, None)
    assert rec["verdict"] == "ship-nothing" and rec["model"] is None
    assert rec["evidence"]["candidates"][0]["significant"] is False
    above = _scores({"epoch-2": {"rougeL": (0.5, 1e-9, 0.4), "semantic": (0.5, 0.0, 0.3)}})
    assert recommend(above, None)["model"] == "epoch-2"


def test_a_ci_high_of_exactly_zero_is_not_significantly_worse():
    scores = _scores({"epoch-2": {"rougeL": (0.5, 0.1, 0.4), "semantic": (0.18, -0.1, 0.0)}})
    assert recommend(scores, None)["model"] == "epoch-2"
    scores = _scores({"epoch-2": {"rougeL": (0.5, 0.1, 0.4), "semantic": (0.18, -0.1, -1e-9)}})
    assert recommend(scores, None)["model"] is None


def test_near_tie_boundary_is_a_rouge_l_gap_below_0_01():
    """A gap of 0.01 is a real difference (the better mean ships even with the higher validation loss);
    0.0099 is a tie, settled by validation loss."""
    summary = _summary({4: 0.80, 8: 0.95})
    ahead = {"rougeL": (0.50, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}
    for behind, expected in ((0.49, "epoch-8"), (0.4901, "epoch-4")):
        scores = _scores({"epoch-4": {"rougeL": (behind, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}, "epoch-8": ahead})
        rec = recommend(scores, summary)
        assert rec["model"] == expected, behind
        tie_notes = [n for n in rec["evidence"]["notes"] if "within 0.01 ROUGE-L" in n]
        assert bool(tie_notes) == (expected == "epoch-4")


def test_without_a_fine_tuned_model_nothing_ships_even_when_retrieval_scores_well():
    scores = _scores({"retrieval": {"rougeL": (0.6, 0.3, 0.5), "semantic": (0.6, 0.3, 0.5)}})
    rec = recommend(scores, None)
    assert rec["model"] is None and rec["verdict"] == "ship-nothing"
    assert "no fine-tuned model was evaluated" in rec["reason"]
    assert rec["evidence"]["candidates"] == [] and rec["evidence"]["retrieval"]["model"] == "retrieval"


def test_other_eval_sets_add_notes_but_never_change_the_decision():
    main = _scores({"epoch-4": {"rougeL": (0.45, 0.1, 0.4), "semantic": (0.5, 0.1, 0.4)}})
    unseen = _scores({"epoch-4": {"rougeL": (0.15, -0.2, 0.1), "semantic": (0.2, -0.1, 0.1)}}, n=12)
    reworded = _scores({"epoch-4": {"rougeL": (0.35, 0.05, 0.25), "semantic": (0.3, 0.0, 0.2)}}, n=20)
    other_model = _scores({"epoch-9": {"rougeL": (0.9, 0.5, 0.9), "semantic": (0.9, 0.5, 0.9)}})
    alone = recommend(main, None)
    rec = recommend(main, None, others={"unseen": unseen, "reworded": reworded, "other": other_model})
    assert (rec["model"], rec["verdict"], rec["reason"]) == (alone["model"], alone["verdict"], alone["reason"])
    notes = [n for n in rec["evidence"]["notes"] if n.startswith("on '")]
    assert len(notes) == 2  # none for a set that did not score the chosen model
    assert notes[0].startswith("on 'unseen' (12 questions) epoch-4 scores ROUGE-L -0.05 [-0.20, 0.10] (p ")
    assert notes[0].endswith(") vs base (not significant)")
    assert notes[1].startswith("on 'reworded' (20 questions) epoch-4 scores ROUGE-L +0.15 [0.05, 0.25] (p ")
    assert notes[1].endswith(") vs base (significant)")


def test_retrieval_ahead_by_a_paired_ci_touching_zero_still_ships_with_the_note():
    scores = _scores({"epoch-3": {"rougeL": (0.60, 0.3, 0.5), "semantic": (0.5, 0.1, 0.4)}})
    rec = recommend(_with_retrieval(scores, 0.70, {"epoch-3": (-0.10, -0.2, 0.0)}), _summary({3: 1.0}))
    assert rec["model"] == "epoch-3" and rec["verdict"] == "ship"
    assert rec["reason"].endswith("a plain lookup of training answers may be enough.")
    level = recommend(_with_retrieval(scores, 0.60, {"epoch-3": (0.0, -0.1, 0.1)}), _summary({3: 1.0}))
    assert level["verdict"] == "ship" and "retrieval beats" not in level["reason"].lower()


def _with_ceiling(scores: dict, best: float, first_is_best: int) -> dict:
    return {
        **scores,
        "retrieval_ceiling": {
            "k": 2,
            "rougeL": {"mean": best, "ci95": [best - 0.05, best + 0.05]},
            "first_is_best": first_is_best,
        },
    }


def test_the_retrieval_ceiling_says_how_far_a_grounded_model_could_pass_retrieval():
    """Where retrieval's first answer is already the best retrieved one everywhere, the note says a grounded
    model can at most tie; otherwise it names how many questions are left to gain on. Closed-book runs: no note."""
    grounded = _scores(
        {
            "epoch-3": {"rougeL": (0.45, 0.2, 0.3), "semantic": (0.5, 0.1, 0.4)},
            "best+rag": {"rougeL": (0.78, 0.5, 0.7), "semantic": (0.8, 0.5, 0.7)},
        },
        n=41,
    )
    scores = _with_retrieval(grounded, 0.82, {"best+rag": (-0.04, -0.07, -0.01)})
    rec = recommend(_with_ceiling(scores, 0.82, 41), _summary({3: 1.0}, best=3))
    note = next(n for n in rec["evidence"]["notes"] if n.startswith("Retrieval ceiling"))
    assert "ROUGE-L 0.82 [0.77, 0.87], retrieval 0.82" in note and "on all 41 questions" in note
    assert "can at most tie retrieval here" in note
    rec = recommend(_with_ceiling(scores, 0.89, 28), _summary({3: 1.0}, best=3))
    note = next(n for n in rec["evidence"]["notes"] if n.startswith("Retrieval ceiling"))
    assert "on 28 of 41 questions" in note and "only on the other 13" in note
    closed = _with_retrieval(_scores({"epoch-3": {"rougeL": (0.45, 0.2, 0.3)}}), 0.7, {"epoch-3": (-0.2, -0.3, -0.1)})
    rec = recommend(_with_ceiling(closed, 0.89, 28), _summary({3: 1.0}, best=3))
    assert not any(n.startswith("Retrieval ceiling") for n in rec["evidence"]["notes"])
    assert not any(
        n.startswith("Retrieval ceiling") for n in recommend(scores, _summary({3: 1.0}))["evidence"]["notes"]
    )
