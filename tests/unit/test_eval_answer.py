"""The eval stage on a tiny-model run: output contracts exactly, resume after a crash, staleness."""

from __future__ import annotations

import json
import math

import pytest

from eval_run import TEST, make_run, run_config
from qatune.console import QatuneError
from qatune.evaluate.answer import evaluate, is_current
from qatune.evaluate.metrics import METRICS
from qatune.generate import Engine
from qatune.rundir import RunDir
from qatune.storage import read_jsonl
from qatune.trust.facts import key_facts

MODELS = ["base", "retrieval", "epoch-1", "epoch-2"]
ROW_KEYS = {
    "model",
    "question_id",
    "question",
    "reference",
    "answer",
    "metrics",
    "stopped",
    "new_tokens",
    "answerable",
    "abstained",
    "abstained_by",
}
REPLACED_KEYS = {"raw_answer", "unknown_facts"}  # only where a check replaced or withheld the model's answer


@pytest.fixture(scope="module")
def run_template(tmp_path_factory, tiny_model_dir):
    return make_run(tmp_path_factory.mktemp("eval") / "run", tiny_model_dir, epochs=(1, 2))


@pytest.fixture
def run(tmp_path, run_template):
    import shutil

    return shutil.copytree(run_template, tmp_path / "run")


@pytest.fixture
def generate_calls(monkeypatch):
    """Count the questions each Engine.generate call is asked to answer."""
    calls: list[tuple[str, int]] = []
    original = Engine.generate

    def counting(self, name, conversations, **kwargs):
        calls.append((name, len(conversations)))
        return original(self, name, conversations, **kwargs)

    monkeypatch.setattr(Engine, "generate", counting)
    return calls


def _flat(obj, prefix=""):
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}/{i}").items()}
    return {prefix: obj}


def assert_same_scores(a: dict, b: dict) -> None:
    """Equal up to float noise (embeddings of the same text batched differently differ by ~1e-7)."""
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for key, value in fa.items():
        if isinstance(value, float):
            assert fb[key] == pytest.approx(value, abs=1e-5), key
        else:
            assert fb[key] == value, key


def _check_generations(rows: list[dict]) -> None:
    assert len(rows) == len(MODELS) * len(TEST)
    assert {(r["model"], r["question_id"]) for r in rows} == {(m, f"te{i}") for m in MODELS for i in range(6)}
    for row in rows:
        assert set(row) - REPLACED_KEYS == ROW_KEYS
        assert (row["abstained_by"] in ("facts", "question")) == bool(set(row) & REPLACED_KEYS)
        assert row["answerable"] is True and isinstance(row["abstained"], bool)
        assert list(row["metrics"]) == list(METRICS)
        assert isinstance(row["stopped"], bool) and isinstance(row["new_tokens"], int)
        question = dict(TEST)[row["question"]]
        assert row["reference"] == question
        for name, value in row["metrics"].items():
            if name == "answer_nll" and row["model"] == "retrieval":
                assert value is None
            elif name == "fact_recall" and not key_facts(row["reference"]):
                assert value is None  # the reference states no key fact to recall
            else:
                assert isinstance(value, float) and math.isfinite(value), (name, row)
        if row["model"] == "retrieval":
            assert row["stopped"] is True and row["new_tokens"] == 0
        else:
            assert 0 < row["new_tokens"] <= 6 and "<|im_start|>" not in row["answer"]


def _check_scores(scores: dict) -> None:
    assert {
        "name",
        "n",
        "source",
        "metrics",
        "models",
        "kinds",
        "comparisons",
        "stop_rate",
        "unavailable",
        "warnings",
    } <= set(scores)
    assert scores["name"] == "test" and scores["n"] == 6 and scores["metrics"] == list(METRICS)
    assert list(scores["models"]) == MODELS
    assert scores["kinds"] == {
        "base": "base",
        "retrieval": "baseline",
        "epoch-1": "fine-tuned",
        "epoch-2": "fine-tuned",
    }
    for model, table in scores["models"].items():
        expected = [m for m in METRICS if not (model == "retrieval" and m == "answer_nll")]
        assert list(table) == expected
        for stat in table.values():
            lo, hi = stat["ci95"]
            assert lo <= stat["mean"] <= hi
    assert set(scores["comparisons"]) == {"retrieval", "epoch-1", "epoch-2"}
    for stat in scores["comparisons"]["epoch-1"].values():
        assert set(stat) == {"diff", "ci95", "p"} and 0 < stat["p"] <= 1
    assert "answer_nll" not in scores["comparisons"]["retrieval"]
    assert set(scores["stop_rate"]) == set(MODELS) and scores["stop_rate"]["retrieval"] == 1.0
    assert "bertscore" in scores["unavailable"]
    assert any("6 questions" in w for w in scores["warnings"])


def test_full_eval_writes_the_contract_files(run, generate_calls):
    scores = evaluate(run, run_config(run))
    rundir = RunDir(run)
    rows = read_jsonl(rundir.eval_generations("test"))
    _check_generations(rows)
    _check_scores(scores)
    assert json.loads(rundir.eval_scores("test").read_text()) == scores
    # Means are the plain average of the saved per-answer metrics.
    for model in MODELS:
        vals = [r["metrics"]["rougeL"] for r in rows if r["model"] == model]
        assert scores["models"][model]["rougeL"]["mean"] == pytest.approx(sum(vals) / len(vals))
    # Retrieval picks the training answer for each paraphrase, never an augmented row.
    retrieved = {r["question"]: r["answer"] for r in rows if r["model"] == "retrieval"}
    assert retrieved["Which professor teaches this class?"] == "Professor Ada Lovelace teaches the course."
    assert "AUGMENTED ROW" not in retrieved.values()
    combined = json.loads(rundir.eval_combined("test").read_text())
    assert len(combined) == 6
    for entry, (question, reference) in zip(combined, TEST, strict=True):
        assert set(entry) == {"question", "reference_answer", "base_model_response", "fine_tuned_model_responses"}
        assert (entry["question"], entry["reference_answer"]) == (question, reference)
        assert list(entry["fine_tuned_model_responses"]) == ["epoch-1", "epoch-2"]
    assert sum(n for _, n in generate_calls) == 3 * 6  # base + 2 adapters, each question once
    assert is_current(run, run_config(run), "test")


def test_resume_generates_only_what_a_crash_lost(run, generate_calls):
    config = run_config(run)
    first = evaluate(run, config)
    path = RunDir(run).eval_generations("test")
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:9]  # the crash: 9 complete rows and half of the tenth
    path.write_text("".join(kept) + lines[9][: len(lines[9]) // 2])
    RunDir(run).eval_scores("test").unlink()
    assert not is_current(run, config, "test")
    generate_calls.clear()
    assert_same_scores(evaluate(run, config), first)
    lost = len(MODELS) * len(TEST) - 9
    assert sum(n for _, n in generate_calls) == lost  # the 6 retrieval rows were among the first 9
    rows = read_jsonl(path)
    assert len(rows) == len(MODELS) * len(TEST) and path.read_text().endswith("\n")
    generate_calls.clear()
    assert_same_scores(evaluate(run, config), first)
    assert generate_calls == []


def test_changed_inputs_invalidate_only_what_they_touch(run, run_template, tiny_model_dir, generate_calls):
    from eval_run import save_adapter

    config = run_config(run)
    evaluate(run, config)
    save_adapter(tiny_model_dir, run / "models" / "epoch-2", seed=7)  # epoch-2 retrained
    assert not is_current(run, config, "test")
    generate_calls.clear()
    evaluate(run, config)
    assert generate_calls == [("epoch-2", 4), ("epoch-2", 2)]  # batch size 4: two saved batches

    test = run / "data" / "test.jsonl"
    test.write_text(test.read_text().replace("Room 101.", "Room 102."))
    generate_calls.clear()
    scores = evaluate(run, config)
    assert sum(n for _, n in generate_calls) == 3 * 6 and scores["n"] == 6


def test_best_copy_of_an_epoch_is_not_generated_twice(run, generate_calls):
    import shutil

    shutil.copytree(run / "models" / "epoch-1", run / "models" / "best")
    scores = evaluate(run, run_config(run, models=["epoch-1", "best"]))
    assert list(scores["models"]) == ["base", "epoch-1", "best"] and scores["kinds"]["best"] == "fine-tuned"
    assert sorted({name for name, _ in generate_calls}) == ["base", "epoch-1"]
    rows = read_jsonl(RunDir(run).eval_generations("test"))
    answers = {m: {r["question_id"]: r["answer"] for r in rows if r["model"] == m} for m in ("epoch-1", "best")}
    assert answers["best"] == answers["epoch-1"] and len(answers["best"]) == 6
    assert scores["comparisons"]["best"] == scores["comparisons"]["epoch-1"]


class _Clock:
    """Records what the eval stage reports to the run's clock."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def answered(self, rows: list[dict], seconds: float = 0.0, chosen: bool = False) -> None:
        self.rows += rows

    def live_line(self) -> None:
        return None


def test_work_left_and_the_clock_count_only_generated_answers(run, generate_calls):
    """The run's time estimate asks the stage: retrieval and `best` (the weights of epoch-1) generate nothing,
    saved answers that are still valid are not counted again, and a current eval set has no work left."""
    import shutil

    from qatune.evaluate.work import work_left

    shutil.copytree(run / "models" / "epoch-1", run / "models" / "best")
    config = run_config(run)
    assert work_left(run, config, "test").answers == {"base": 6, "epoch-1": 6, "epoch-2": 6}
    clock = _Clock()
    evaluate(run, config, clock=clock)
    reported = {(r["model"], r["question_id"]) for r in clock.rows}
    assert len(clock.rows) == len(reported) == sum(n for _, n in generate_calls) == 18
    assert {m for m, _ in reported} == {"base", "epoch-1", "epoch-2"}
    assert work_left(run, config, "test") is None
    path = RunDir(run).eval_generations("test")
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:9]))  # a crash after 9 rows
    RunDir(run).eval_scores("test").unlink()
    left = work_left(run, config, "test").answers
    generate_calls.clear()
    evaluate(run, config, clock=_Clock())
    assert sum(left.values()) == sum(n for _, n in generate_calls) == 15  # the 6 retrieval rows came first


def test_models_flag_validates_names_and_keeps_base(run):
    with pytest.raises(QatuneError, match="no model 'epoch-9'"):
        evaluate(run, run_config(run, models=["epoch-9"]))
    scores = evaluate(run, run_config(run, models=["epoch-2"]))
    assert list(scores["models"]) == ["base", "epoch-2"]
    assert not is_current(run, run_config(run), "test")


def test_bad_eval_inputs_are_one_line_errors(run, tmp_path):
    with pytest.raises(QatuneError, match="questions file not found"):
        evaluate(run, run_config(run), questions=tmp_path / "nope.csv")
    with pytest.raises(QatuneError, match="invalid eval set name"):
        evaluate(run, run_config(run), name="../escape")
    with pytest.raises(QatuneError, match="run directory not found"):
        evaluate(tmp_path / "missing", run_config(run))
    (run / "data" / "test.jsonl").write_text("")
    with pytest.raises(QatuneError, match="holds no questions"):
        evaluate(run, run_config(run))


def test_auto_answer_budget_is_twice_the_longest_trained_answer(run, tiny_model_dir, generate_calls):
    from qatune.evaluate.budget import answer_budget, auto_budget
    from qatune.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    answers = [r["answer"] for r in read_jsonl(RunDir(run).split_file("train"))]
    longest = max(len(tokenizer.encode(a, add_special_tokens=False)) for a in answers)
    config = run_config(run, max_new_tokens="auto", models=["epoch-1"])
    budget = answer_budget(RunDir(run), config)
    assert budget == auto_budget(longest + 1) == max(32, 2 * (longest + 1) + 8)
    evaluate(run, config)
    rows = [r for r in read_jsonl(RunDir(run).eval_generations("test")) if r["model"] != "retrieval"]
    assert max(r["new_tokens"] for r in rows) <= budget
    cut = [r for r in rows if not r["stopped"]]  # the random tiny model seldom stops: the budget or a loop ends it
    assert cut and all(r["new_tokens"] <= budget for r in cut)
    # A longer trained answer raises the budget, so the saved answers are stale and made again.
    train = RunDir(run).split_file("train")
    train.write_text(train.read_text().replace("AUGMENTED ROW", "AUGMENTED ROW " + "and more words " * 40))
    assert answer_budget(RunDir(run), config) > budget
    assert not is_current(run, config, "test")
    assert answer_budget(RunDir(run), run_config(run, max_new_tokens=12)) == 12


def test_max_new_tokens_must_be_a_count_or_auto(run):
    with pytest.raises(QatuneError, match="max_new_tokens must be 1 to 4096 or 'auto'"):
        run_config(run, max_new_tokens=0)
    assert run_config(run, max_new_tokens="auto").eval.max_new_tokens == "auto"
