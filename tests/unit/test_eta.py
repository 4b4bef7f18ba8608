"""The whole run's remaining time: the work each stage counts from a prepared run directory, the rates file,
estimates that fall as work is done, reused stages counting nothing, and the live line under a stage bar."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from rich.console import Console
from rich.progress import BarColumn, TextColumn

from qatune import console, eta, train
from qatune.config import load
from qatune.eta.estimate import Measured, Rates, about, default_rates, duration, load_rates, rates_path, save_rates
from qatune.evaluate.work import EvalWork
from qatune.evaluate.work import work_left as eval_work_left
from qatune.rundir import RunDir
from qatune.storage import atomic_write_json, write_jsonl
from qatune.train.work import TrainWork
from train_runs import pairs, train_settings, write_data

RATES = Rates(
    train_tokens_per_s=100.0,
    train_answer_share=0.25,
    train_setup_s=10.0,
    recall_s_per_answer=0.5,
    eval_s_per_token=0.01,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QATUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _run(tmp_path, n_train=20, n_val=4, n_test=5):
    """A prepared run directory: train/val/test splits as `qatune prepare` writes them."""
    run = write_data(tmp_path / "run", n_train=n_train, n_val=n_val)
    val = [dict(r, kind="paraphrase") for r in pairs(n_val, start=n_train)[:3]]
    write_jsonl(run / "data" / "val.jsonl", val + pairs(1, start=90))
    write_jsonl(run / "data" / "test.jsonl", pairs(n_test, start=50))
    return RunDir(run)


def _config(model_dir, eval_settings=None, **train):
    settings = train_settings(model_dir, **train)
    return load(None, {**settings, "eval": eval_settings or {"max_new_tokens": 64}})


def test_train_work_counts_tokens_epochs_and_recall(tmp_path, tiny_model_dir):
    rundir = _run(tmp_path)
    one_pass = train.work_left(rundir.root, _config(tiny_model_dir, epochs=[1, 3]))
    assert one_pass.epochs == 3 and one_pass.saves == 2 and one_pass.recall_questions == 3
    chars = sum(len(r["question"]) + len(r["answer"]) for r in pairs(20))
    assert one_pass.epoch_tokens == pytest.approx(20 * 32 + chars / 4)
    independent = train.work_left(rundir.root, _config(tiny_model_dir, epochs=[1, 3], sweep="independent"))
    assert independent.epochs == 4
    grounded = train.work_left(rundir.root, _config(tiny_model_dir, epochs=[1, 3], grounded=True))
    assert grounded.epoch_tokens > 2 * one_pass.epoch_tokens  # each pair again, with retrieved pairs
    half = train.work_left(rundir.root, _config(tiny_model_dir, epochs=[1, 3], grounded=True, grounded_share=0.5))
    assert half.epoch_tokens == pytest.approx((grounded.epoch_tokens + one_pass.epoch_tokens) / 2)
    answers = sum(len(r["answer"]) for r in pairs(20)) / 4
    assert one_pass.answer_share == pytest.approx(answers / one_pass.epoch_tokens)
    assert grounded.answer_share < one_pass.answer_share  # grounded prompts add context, not answers


def test_train_work_subtracts_what_a_resumed_checkpoint_did(tmp_path, tiny_model_dir):
    rundir = _run(tmp_path)
    config = _config(tiny_model_dir, epochs=[1, 4])
    progress = {"run_index": 0, "epoch": 3, "saved": [1], "train_tokens": 1234}
    progress["input_hash"] = train.input_hash(rundir.root, config)  # a checkpoint train would resume from
    atomic_write_json(rundir.checkpoints_dir / "ckpt-000008" / "state.json", {"format": 1, "progress": progress})
    resumed = train.work_left(rundir.root, config)
    assert (resumed.epochs, resumed.saves, resumed.resumed) == (2, 1, True)
    other = _config(tiny_model_dir, epochs=[1, 4], lr=1e-3)
    assert train.work_left(rundir.root, other).epochs == 4  # a checkpoint of other inputs is discarded


def test_eval_work_before_training_predicts_the_generating_models(tmp_path, tiny_model_dir):
    rundir = _run(tmp_path)
    config = _config(tiny_model_dir, epochs=[1, 2], grounded=True)
    work = eval_work_left(rundir.root, config, "test", None, train.adapter_names(config.train.epochs))
    # retrieval generates nothing; best is a copy of an epoch, best+rag is not (no epoch-N+rag is scored)
    assert work.answers == {"base": 5, "epoch-1": 5, "epoch-2": 5, "base+rag": 5, "best+rag": 5}
    assert work.max_new_tokens == 64 and 5 < work.answer_tokens < 30
    chosen = _config(tiny_model_dir, {"models": ["epoch-2", "best"]}, epochs=[1, 2])
    planned = train.adapter_names(chosen.train.epochs)
    assert eval_work_left(rundir.root, chosen, "test", None, planned).answers == {"base": 5, "epoch-2": 5, "best": 5}


def test_eval_work_after_training_counts_the_saved_adapters(tmp_path, tiny_model_dir):
    rundir = _run(tmp_path)
    # early stopping: epoch 2 was never saved; best has the weights of epoch 3 (identical adapter files)
    for name, weights in (("epoch-1", 1), ("epoch-3", 3), ("best", 3)):
        atomic_write_json(rundir.model_dir(name) / "adapter_config.json", {"weights": weights})
    work = eval_work_left(rundir.root, _config(tiny_model_dir, epochs=[1, 2, 3]), "test")
    assert work.answers == {"base": 5, "epoch-1": 5, "epoch-3": 5}
    questions = tmp_path / "extra.csv"
    questions.write_text("Question,Answer\nWho?,Ada.\nWhen?,Monday.\n", encoding="utf-8")
    extra = eval_work_left(rundir.root, _config(tiny_model_dir), "extra", questions)
    assert set(extra.answers.values()) == {2} and extra.references
    silent = tmp_path / "silent.csv"
    silent.write_text("Question,Answer,answerable\nWho?,,no\nWhen?,,no\n", encoding="utf-8")
    silent_work = eval_work_left(rundir.root, _config(tiny_model_dir), "silent", silent)
    assert not silent_work.references and 10 < silent_work.refusal_tokens < 20  # the default refusal
    assert eval_work_left(rundir.root, _config(tiny_model_dir), "x", tmp_path / "missing.csv").answers["base"] == 0


def test_rates_file_round_trip_and_bad_values(home):
    defaults = Rates()
    assert load_rates("m cpu fp32 none hf", defaults) == (defaults, False)
    save_rates("m cpu fp32 none hf", replace(defaults, train_tokens_per_s=612.5))
    save_rates("other cpu bf16 none hf", replace(defaults, report_s=1.5))
    rates, remembered = load_rates("m cpu fp32 none hf", defaults)
    assert remembered and rates.train_tokens_per_s == 612.5 and rates.report_s == defaults.report_s
    data = json.loads(rates_path().read_text())
    data["rates"]["m cpu fp32 none hf"].update(train_tokens_per_s=-1, eval_s_per_token="fast", unknown=3)
    rates_path().write_text(json.dumps(data))
    assert load_rates("m cpu fp32 none hf", defaults)[0] == defaults  # only positive numbers of known rates count
    rates_path().write_text("{not json")
    assert load_rates("m cpu fp32 none hf", defaults) == (defaults, False)
    save_rates("m cpu fp32 none hf", defaults)  # a corrupt file is replaced
    assert load_rates("m cpu fp32 none hf", defaults)[1]


def test_default_rates_are_slower_for_bigger_models_and_faster_on_cuda():
    small, big = default_rates(135_000_000, cuda=False), default_rates(1_350_000_000, cuda=False)
    assert big.train_tokens_per_s == pytest.approx(small.train_tokens_per_s / 10)
    assert big.eval_s_per_token == pytest.approx(small.eval_s_per_token * 10)
    assert default_rates(1_350_000_000, cuda=True).train_tokens_per_s > big.train_tokens_per_s


def test_training_estimate_falls_as_steps_are_done():
    work = TrainWork(epoch_tokens=1000, epochs=3, recall_questions=4, saves=2)
    assert work.seconds(RATES) == pytest.approx(10 + 3000 / 100 + 8 * 0.5)
    m = Measured()
    left = [work.left(RATES, m, elapsed) for elapsed in (0, 4, 8)]  # setting up
    assert left == sorted(left, reverse=True) and left[0] == pytest.approx(work.seconds(RATES))
    m.epoch_tokens = 1200  # the loop counts one pass exactly
    for step in range(6):
        before = work.left(RATES, m, 10 + step)
        m.tokens, m.seconds = m.tokens + 600, m.seconds + 6
        assert work.left(RATES, m, 11 + step) < before
    assert work.left(RATES, m, 20) == 0  # all 3 passes done


def test_training_with_more_answer_tokens_is_priced_slower_per_token():
    """The output layer and the loss run only at answer tokens: a training of long answers trains fewer tokens a
    second than the (short-answer) training the machine's speed was measured on; recall answers cost by length."""
    short = TrainWork(epoch_tokens=1000, epochs=1, recall_questions=0, saves=0, answer_share=0.25)
    long = replace(short, answer_share=0.6)
    rates = replace(RATES, answer_token_cost=1.4, train_setup_s=0.0)
    assert short.seconds(rates) == pytest.approx(10.0)  # the share it was measured at: 1000 tokens at 100/s
    assert long.seconds(rates) == pytest.approx(10.0 * (1 + 1.4 * 0.6) / (1 + 1.4 * 0.25))
    recall = replace(short, recall_questions=4, saves=2, recall_tokens=230)
    assert recall.seconds(rates) - short.seconds(rates) == pytest.approx(8 * 0.5 * (30 + 230) / (30 + 20))


def test_training_estimate_follows_the_measured_rate():
    work = TrainWork(epoch_tokens=1000, epochs=10, recall_questions=0, saves=0)
    slow = Measured(epoch_tokens=1000, tokens=1000, seconds=100.0)  # 10 tokens/s measured, 100 remembered
    per_token = (10 * 0.01 + 100 * 0.1) / (10 + 100)  # the remembered rate weighs as 10 s of measurement
    assert work.left(RATES, slow, 100) == pytest.approx(9000 * per_token)


def test_eval_estimate_falls_as_answers_are_saved():
    work = EvalWork(answers={"base": 10, "epoch-1": 10, "best+rag": 10}, answer_tokens=20, max_new_tokens=100)
    rates = replace(RATES, base_fill=0.9, tuned_ratio=1.5, rag_tuned_ratio=1.5)
    assert work.expected("base", rates) == 90 and work.expected("best+rag", rates) == 30
    assert work.seconds(rates) == pytest.approx((900 + 300 + 300) * 0.01)
    m, before = Measured(), work.seconds(rates)
    for model in ("base", "epoch-1", "best+rag"):  # each model answers its 10 questions, 30 new tokens each
        m.answers[model], m.tokens = 10, m.tokens + 300
        now = work.left(rates, m, 5.0)
        assert now < before
        before = now
    assert before == 0


def test_base_and_grounded_answers_are_priced_by_their_fitted_budget():
    """In a run with an index, base and grounded answers may take what their retrieved answers need (the mean of
    those budgets), and grounded fine-tuned answers have their own ratio (they stop where they start copying)."""
    work = EvalWork(answers={"base": 1, "base+rag": 1}, answer_tokens=200, max_new_tokens=1024, fitted_tokens=300)
    rates = replace(RATES, base_fill=0.5, rag_fill=0.25, tuned_ratio=1.0, rag_tuned_ratio=0.1)
    assert work.expected("base", rates) == 150 and work.expected("base+rag", rates) == 75
    assert work.expected("best", rates) == 200 and work.expected("best+rag", rates) == 20
    assert replace(work, fitted_tokens=150).expected("best", rates) == 150  # at most its budget
    m = Measured(tokens=500, answers={"base": 2, "best+rag": 2}, new_tokens={"base": 480, "best+rag": 20})
    learned = work.learned(rates, m, 5.0, None)
    assert learned.base_fill == pytest.approx(0.8) and learned.rag_tuned_ratio == pytest.approx(0.05)
    assert learned.tuned_ratio == rates.tuned_ratio  # no closed-book fine-tuned answer measured


def test_chosen_answers_are_priced_by_their_prompt_passes():
    """A grounded model that chooses a retrieved answer (long-answer data) generates no tokens: it runs its prompt
    twice, priced as that many trained tokens times the machine's ratio, which a finished set learns from the
    time its choosing batches took; their answers teach nothing about written answers' lengths."""
    chosen = frozenset({"base+rag", "best+rag"})
    work = EvalWork(
        answers={"base": 2, "base+rag": 2, "best+rag": 2},
        answer_tokens=200,
        max_new_tokens=1024,
        fitted_tokens=300,
        chosen=chosen,
        choice_tokens=1000,
    )
    rates = replace(RATES, base_fill=0.5, train_tokens_per_s=500.0, choose_train_ratio=1.5)
    assert work.expected("best+rag", rates) == 0 and work.expected("base", rates) == 150
    assert work.choice_seconds(rates) == pytest.approx(3.0)
    assert work.seconds(rates) == pytest.approx(2 * 150 * 0.01 + 4 * 3.0)
    m = Measured(answers={"best+rag": 1}, chosen=1, chosen_seconds=2.0)
    assert work.left(rates, m, 2.0) == pytest.approx(2 * 150 * 0.01 + 3 * 3.0)  # the choosing time is apart
    m = Measured(tokens=300, answers={"base": 2, "base+rag": 4, "best+rag": 4}, chosen=8, chosen_seconds=16.0)
    m.new_tokens = {"base": 300, "base+rag": 0, "best+rag": 0}
    learned = work.learned(rates, m, 19.0, None)
    assert learned.choose_train_ratio == pytest.approx(2.0 * 500 / 1000)  # 2 s per chosen answer
    assert learned.eval_s_per_token == pytest.approx(3.0 / 300) and learned.base_fill == pytest.approx(0.5)
    assert (learned.rag_fill, learned.rag_tuned_ratio) == (rates.rag_fill, rates.rag_tuned_ratio)
    few = Measured(answers={"best+rag": 4}, chosen=4, chosen_seconds=16.0)  # 4 s each: too few to measure
    assert work.learned(rates, few, 17.0, None).choose_train_ratio == 1.5


def test_what_the_guard_answered_and_unanswerable_sets_teach_no_answer_lengths():
    """Answers the guard gave before any model pass (retrieval fallback, question check) cost nothing and say
    nothing of how long a model's answers run; a set of questions the data does not answer has no reference
    lengths to measure fine-tuned answers against (its refusals are short), so it only measures speed."""
    work = EvalWork(answers={"base": 4, "best": 4}, answer_tokens=20, max_new_tokens=100)
    m = Measured(tokens=440, answers={"base": 4, "best": 4}, new_tokens={"base": 400, "best": 40})
    m.unasked = {"best": 2}
    learned = work.learned(RATES, m, 4.4, None)
    assert learned.tuned_ratio == pytest.approx(20 / 20) and learned.base_fill == pytest.approx(1.0)
    assert replace(work, references=False, refusal_tokens=12).expected("best", RATES) == 12  # it abstains
    assert replace(work, references=False, refusal_tokens=12).expected("base", RATES) == 100  # it runs on
    unanswerable = replace(work, references=False).learned(RATES, m, 8.8, None)
    assert unanswerable.eval_s_per_token == pytest.approx(0.02)
    assert (unanswerable.tuned_ratio, unanswerable.base_fill) == (RATES.tuned_ratio, RATES.base_fill)


def test_base_answers_are_priced_by_their_measured_length_and_fallbacks_by_their_share():
    """Once measured, the base model's answers are priced at its own mean length (at most the budget), which
    barely moves with the data (a fill share of a long-answer budget would price it several times over); on a set
    the data does not answer, grounded answers are discounted by the share the guard gave before any pass."""
    work = EvalWork(answers={"base": 10, "base+rag": 10}, answer_tokens=200, max_new_tokens=1024, fitted_tokens=300)
    m = Measured(tokens=720, answers={"base": 10, "base+rag": 10}, new_tokens={"base": 700, "base+rag": 20})
    m.unasked = {"base+rag": 6}
    unanswerable = replace(work, references=False)
    learned = unanswerable.learned(RATES, m, 7.2, None)
    assert learned.base_tokens == pytest.approx(70) and learned.unasked_share == pytest.approx(0.6)
    assert work.expected("base", learned) == pytest.approx(70)
    assert replace(work, fitted_tokens=50).expected("base", learned) == 50  # at most its budget
    assert work.expected("base+rag", learned) == work.expected("base+rag", RATES)  # the grounded base: its fill
    per_answer = work.expected("base+rag", learned) * 0.01
    assert unanswerable.seconds(learned) == pytest.approx(10 * 70 * 0.01 + 10 * 0.4 * per_answer)
    assert work.seconds(learned) == pytest.approx(10 * 70 * 0.01 + 10 * per_answer)  # answerable: all asked


def test_eval_work_on_long_answers_plans_chosen_grounded_answers(tmp_path, tiny_model_dir):
    """Before training, a run whose answers are long (generate.select) plans its grounded models' answers as
    chosen: one pass over `rag_k` retrieved answers, as the prompt shows them (cut to the answer head and its mark),
    and two over the question or none; `--select off` plans them written."""
    rundir = _run(tmp_path)
    long = [dict(r, answer=r["answer"] + " It also says more. " * 20) for r in pairs(20)]
    write_jsonl(rundir.split_file("train"), long)
    adapters = train.adapter_names([1, 2])
    typical = sum(len(r["answer"]) / 4 + 1 for r in long) / len(long)
    for select, head, models in (
        ("auto", 48, {"base+rag", "best+rag"}),
        ("auto", 0, {"base+rag", "best+rag"}),
        ("off", 48, set()),
    ):
        settings = train_settings(tiny_model_dir, epochs=[1, 2], grounded=True, answer_head=head)
        config = load(None, {**settings, "abstain": {"select": select}})
        work = eval_work_left(rundir.root, config, "test", None, adapters)
        assert work.chosen == models and work.answers["best+rag"] == 5
        shown = min(typical, head + 1) if head else typical  # " ..." is about one token
        assert work.choice_tokens == (pytest.approx(2 * shown + 2 * 5) if models else 0.0)  # 20-char questions


def test_long_answers_trained_as_leads_are_priced_as_leads(tmp_path, tiny_model_dir):
    """Where closed-book examples train answer leads (long answers, train/leads.py), training counts every
    closed-book example at most the answer head and closed-book answers are expected near the reference's lead;
    `--answer-lead off` prices whole answers."""
    rundir = _run(tmp_path)
    long = [dict(r, answer=r["answer"] + " It also says more. " * 20) for r in pairs(20)]
    write_jsonl(rundir.split_file("train"), long)
    write_jsonl(rundir.split_file("test"), long[:5])
    write_jsonl(rundir.split_file("val"), [dict(r, kind="paraphrase") for r in long[:3]])
    adapters = train.adapter_names([1, 2])
    work = {}
    for lead in ("auto", "off"):
        config = load(None, {**train_settings(tiny_model_dir, epochs=[1, 2], answer_lead=lead)})
        work[lead] = (train.work_left(rundir.root, config), eval_work_left(rundir.root, config, "test", None, adapters))
    (led, led_eval), (whole, whole_eval) = work["auto"], work["off"]
    assert whole_eval.lead_tokens is None and led_eval.lead_tokens == pytest.approx(49)  # 48-token head + end
    assert led.epoch_tokens < whole.epoch_tokens and led.recall_tokens <= 49 < whole.recall_tokens
    rates = replace(RATES, tuned_ratio=1.0)
    assert led_eval.expected("best", rates) == pytest.approx(49)
    assert whole_eval.expected("best", rates) == pytest.approx(whole_eval.answer_tokens)


def test_finished_stages_update_the_rates(tmp_path):
    rundir = RunDir(tmp_path / "run")
    work = TrainWork(epoch_tokens=1000, epochs=2, recall_questions=4, saves=2)
    summary = {"tokens_per_second": 640.0, "train_seconds": 30.0, "eval_seconds": 4.0}
    summary.update(train_tokens=19200, answer_tokens=7680, recall_rougeL_by_epoch={"1": 0.2, "2": 0.3})
    atomic_write_json(rundir.train_summary_json, summary)  # what the finished training wrote
    rates = work.learned(RATES, Measured(epoch_tokens=1500), 46.0, rundir)
    assert rates.train_tokens_per_s == 640 and rates.train_answer_share == 0.4 and rates.token_scale == 1.5
    assert rates.train_setup_s == 12 and rates.recall_s_per_answer == 0.5 and rates.recall_answer_tokens == 20
    resumed = replace(work, resumed=True).learned(RATES, Measured(), 5.0, rundir)
    assert resumed.train_setup_s == RATES.train_setup_s  # a resumed stage did not pay the whole setup
    ev = EvalWork(answers={"base": 4, "epoch-1": 4}, answer_tokens=10, max_new_tokens=100)
    m = Measured(tokens=480, answers={"base": 4, "epoch-1": 4}, new_tokens={"base": 400, "epoch-1": 80})
    rates = ev.learned(RATES, m, 24.0, rundir)
    assert rates.eval_s_per_token == 0.05 and rates.base_fill == 1.0 and rates.tuned_ratio == 2.0
    assert rates.rag_fill == RATES.rag_fill  # no base+rag answers measured
    assert ev.learned(RATES, Measured(tokens=10), 1.0, rundir) == RATES  # too little to measure


def _clock(rundir, config, plans):
    """A clock whose planner hands out `plans` in turn (one per stage boundary)."""
    handed = iter(plans)
    clock = eta.RunClock(rundir, config, config.model, lambda: next(handed))
    clock.rates = RATES
    return clock


def test_run_estimate_counts_reused_stages_as_nothing(tmp_path, tiny_model_dir, home, capsys):
    train = TrainWork(epoch_tokens=1000, epochs=1, recall_questions=0, saves=0)
    test = EvalWork(answers={"base": 10}, answer_tokens=10, max_new_tokens=100)
    plan = {"train": train, "eval:test": test, "report": eta.REPORT}
    reused = {"train": None, "eval:test": None, "report": eta.REPORT}
    clock = _clock(_run(tmp_path), _config(tiny_model_dir), [plan, plan, reused])
    clock.begin("prepare")
    clock.end("prepare", ran=True, seconds=1.0)
    assert clock.left() == pytest.approx(20 + 10 + RATES.report_s)
    clock.begin("train")
    clock.end("train", ran=False, seconds=0.0)  # reused: its own plan no longer counts
    assert clock.left() == pytest.approx(10 + RATES.report_s)
    clock.begin("eval:test")
    clock.end("eval:test", ran=False, seconds=0.0)
    assert clock.left() == pytest.approx(RATES.report_s)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("run:")]
    assert len(lines) == 2  # nothing but the report left after the last eval set: no line
    assert lines[0].startswith("run: prepare done · ") and lines[0].endswith("left for the whole run")
    assert lines[1].startswith("run: train up to date · ")


def test_stage_reports_reach_the_running_clock(tmp_path, tiny_model_dir, home):
    """The eval stage reports the answers it generated (test_eval_answer checks it leaves out retrieval's and
    copied ones); the clock measures the set's rate from them and remembers it when the set is done."""
    test = EvalWork(answers={"base": 3, "epoch-1": 3}, answer_tokens=10, max_new_tokens=100)
    plan = {"train": None, "eval:test": test, "report": eta.REPORT}
    clock = _clock(_run(tmp_path), _config(tiny_model_dir), [plan, plan])
    clock.begin("train")
    clock.end("train", ran=False, seconds=0.0)
    clock.begin("eval:test")
    clock.answered([{"model": "base", "new_tokens": 100}, {"model": "epoch-1", "new_tokens": 12}])
    assert clock.measured.answers == {"base": 1, "epoch-1": 1} and clock.measured.tokens == 112
    fallback = {"model": "epoch-1", "new_tokens": 0, "abstained_by": "retrieval"}  # no model pass
    clock.answered([{"model": "epoch-1", "new_tokens": 4}, fallback], seconds=0.5, chosen=True)  # a choosing batch
    clock.answered([{"model": "base", "new_tokens": 0}], seconds=0.25)
    m = clock.measured
    assert (m.chosen, m.chosen_seconds, m.answers["epoch-1"], m.unasked, m.tokens) == (1, 0.5, 3, {"epoch-1": 1}, 116)
    clock.end("eval:test", ran=True, seconds=2.82)
    assert load_rates(clock.key, Rates())[0].eval_s_per_token == pytest.approx(2.32 / 116)  # less the choosing


def test_live_line_shows_under_the_bar_but_not_in_its_last_frame(tmp_path, tiny_model_dir, home):
    train = TrainWork(epoch_tokens=1000, epochs=2, recall_questions=0, saves=0)
    plan = {"train": train, "eval:test": None, "report": eta.REPORT}
    screen = io.StringIO()
    clock = _clock(_run(tmp_path), _config(tiny_model_dir), [plan])
    clock.begin("prepare")
    clock.end("prepare", ran=True, seconds=1.0)
    clock.begin("train")
    clock.train_started(1000)
    clock.trained(500, 5.0)
    terminal = Console(file=screen, force_terminal=True, width=120)
    columns = (TextColumn("epoch 1"), BarColumn())
    bar = console.progress_bar(*columns, transient=False, footer=clock.live_line, console=terminal, auto_refresh=False)
    with bar:
        bar.add_task("train", total=4, completed=1)
        bar.refresh()
        shown = screen.getvalue()
        assert "run: train " in shown and "left for the whole run" in shown
        screen.seek(0)
        screen.truncate(0)
    final = screen.getvalue()
    assert "epoch 1" in final and "run:" not in final


def test_durations_are_rounded_like_an_estimate():
    assert (duration(42), duration(130), duration(3 * 3600 + 65)) == ("42s", "2m10s", "3h01m")
    assert (about(3), about(42), about(234)) == ("a few seconds", "about 40s", "about 3m50s")
    assert about(3700) == "about 1h02m"
