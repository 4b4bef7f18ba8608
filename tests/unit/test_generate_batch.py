"""Continuous batching: rows of different adapters and prompt lengths that join and leave a running batch at
step boundaries get, token for token, what each gets from HF `generate` on its own (with a chat template
whose prompts share a long start, SmolLM2's, and one whose prompts do not); a row taken out mid-answer leaves
the others as they were; seeded sampling does not depend on the rest of the batch."""

from __future__ import annotations

import pytest

from adapter_runs import run_engine
from greedy_reference import hf_greedy
from qatune.generate import BASE
from qatune.generate.batch import Row, mixed_adapters
from qatune.models.load import load_base
from qatune.models.lora import attach_lora, lora_config
from qatune.models.placement import choose_placement
from qatune.prompts import messages_for
from template_models import FAMILIES, build_family_model

QUESTIONS = [
    "Who is the instructor?",
    "How is the grade computed in this course, and when is the final project due?",
    "When?",
    "What is the title of this course?",
    "Room?",
    "Is there a final exam, or only a project and homework?",
]
NAMES = [BASE, "epoch-1", "epoch-2", "epoch-2", BASE, "epoch-1"]
LIMITS = [20, 7, 15, 30, 3, 12]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, lively_model_dir):
    return run_engine(tmp_path_factory.mktemp("batch") / "run", lively_model_dir)


@pytest.fixture(scope="module")
def smol_engine(tmp_path_factory):
    """SmolLM2's template: every prompt opens with the same system prompt (a start shared by all rows)."""
    family = next(f for f in FAMILIES if f.name == "smollm2")
    folder = build_family_model(tmp_path_factory.mktemp("smol") / "model", family, initializer_range=0.3)
    return run_engine(tmp_path_factory.mktemp("smol") / "run", folder)


def _prompt(engine, question: str) -> list[int]:
    return engine.prompts(BASE, [messages_for(question)])[0]


def _alone(engine, name: str, prompt: list[int], limit: int) -> list[int]:
    """HF generate for this prompt alone, with the adapter switched on the usual way (not per row)."""
    with engine.use(name) as model:
        return hf_greedy(model, engine.tokenizer.pad_token_id, prompt, limit, engine.stop_ids)


def _rows(engine) -> list[Row]:
    return [Row(n, _prompt(engine, q), limit) for n, q, limit in zip(NAMES, QUESTIONS, LIMITS, strict=True)]


def _step(batch, finished: list[Row]) -> None:
    """One step, then the rows it finished leave (as the server does)."""
    batch.step()
    done = [r for r in batch.rows if r.done]
    finished += done
    batch.remove(done)


def _drain(batch, finished: list[Row]) -> None:
    while batch.rows:
        _step(batch, finished)


def _passes(engine) -> tuple[list[int], object]:
    """Records the number of tokens each row feeds in every forward pass (until the handle is removed)."""
    widths: list[int] = []
    handle = engine.model.get_base_model().register_forward_pre_hook(
        lambda _m, _a, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    return widths, handle


@pytest.mark.parametrize("with_stops", [False, True])
@pytest.mark.parametrize("template", ["chatml", "smollm2"])
def test_rows_joining_and_leaving_decode_as_they_would_alone(request, monkeypatch, template, with_stops):
    engine = request.getfixturevalue("smol_engine" if template == "smollm2" else "engine")
    rows = _rows(engine)
    expected = [_alone(engine, r.adapter, r.prompt, r.max_new_tokens) for r in rows]
    if with_stops:  # tokens met mid-answer end some rows early, each at its own step
        monkeypatch.setattr(engine, "stop_ids", sorted({expected[0][4], expected[3][9]}))
        expected = [_alone(engine, r.adapter, r.prompt, r.max_new_tokens) for r in rows]
        assert any(len(e) < r.max_new_tokens for e, r in zip(expected, rows, strict=True))
    assert len({len(r.prompt) for r in rows}) > 3, "prompts of different lengths: left padding in every join"
    batch, finished = engine.new_batch(), []
    assert batch.mixed
    a, b, c, d, e, f = rows
    widths, hook = _passes(engine)
    batch.add([a, b])
    hook.remove()
    if template == "smollm2":  # the shared start ran once, then only the rest of each prompt
        start = next(i for i in range(len(a.prompt)) if a.prompt[i] != b.prompt[i])
        assert start >= 8 and widths == [start, start, max(len(a.prompt), len(b.prompt)) - start]
    else:
        assert widths == [max(len(a.prompt), len(b.prompt))]
    for _ in range(3):
        _step(batch, finished)
    batch.add([c])  # a shorter prompt joins longer running rows
    _step(batch, finished)
    cancelled = [r for r in batch.rows if r is b]
    batch.remove(cancelled)  # b leaves mid-answer (a cancelled request)
    batch.add([d, e, f])
    assert len({r.adapter for r in batch.rows}) == 3, "one pass holds base and both adapters"
    _drain(batch, finished)
    for row, tokens in zip(rows, expected, strict=True):
        if row in cancelled:
            assert row.tokens == tokens[: len(row.tokens)] and len(row.tokens) < len(tokens)
        else:
            assert row.tokens == tokens, (row.adapter, engine.tokenizer.decode(row.prompt))
            assert row.stopped == (tokens[-1] in engine.stop_ids)
    assert batch.columns == 0


def test_cache_columns_shrink_as_rows_leave(engine):
    """A long prompt joining pads the running rows' cache on the left; once it has left, that padding goes."""
    short = Row(BASE, _prompt(engine, "When?"), 12)
    long = Row("epoch-1", _prompt(engine, QUESTIONS[1]), 4)
    batch = engine.new_batch()
    batch.add([short])
    batch.step()
    batch.add([long])
    assert batch.columns == len(long.prompt)
    while not long.done:
        batch.step()
    batch.remove([long])
    batch.step()
    assert not short.done
    # the short row alone: its prompt and the answer tokens fed so far, no padding left over from the long row
    assert batch.columns == len(short.prompt) + len(short.tokens) - 1
    assert short.tokens[:5] == _alone(engine, BASE, short.prompt, 5)


def test_one_adapter_per_batch_where_adapters_cannot_mix(engine, monkeypatch):
    rows = [Row("epoch-2", _prompt(engine, q), 10) for q in QUESTIONS[:4]]
    expected = [_alone(engine, "epoch-2", r.prompt, 10) for r in rows]
    batch = engine.new_batch()
    monkeypatch.setattr(batch, "mixed", False)
    batch.add(rows[:2])
    assert batch.accepts("epoch-2", []) and not batch.accepts("epoch-1", [])
    _step(batch, [])
    batch.add(rows[2:])
    _drain(batch, [])
    assert [r.tokens for r in rows] == expected


def test_mixed_batches_need_plain_lora(lively_model_dir):
    base = load_base(str(lively_model_dir), choose_placement())
    assert not mixed_adapters(base)
    assert mixed_adapters(attach_lora(base, lora_config(4, 8, 0.0, ["q_proj", "v_proj"])))
    from peft import LoraConfig, get_peft_model

    dora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)
    assert not mixed_adapters(get_peft_model(load_base(str(lively_model_dir), choose_placement()), dora))


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(engine):
    prompt = _prompt(engine, QUESTIONS[0])

    def sampled(seed: int) -> Row:
        return Row("epoch-1", prompt, 16, temperature=0.9, top_p=0.95, seed=seed)

    batch = engine.new_batch()
    alone = sampled(3)
    batch.add([alone])
    _drain(batch, [])
    together = [sampled(3), sampled(4), *_rows(engine)[:3]]
    batch.add(together)
    _drain(batch, [])
    assert together[0].tokens == alone.tokens
    assert together[1].tokens != alone.tokens, "another seed draws other tokens"
    greedy = _rows(engine)[:3]
    assert [r.tokens for r in together[2:]] == [_alone(engine, r.adapter, r.prompt, r.max_new_tokens) for r in greedy]


def test_a_tiny_nucleus_or_temperature_is_greedy(engine):
    prompt = _prompt(engine, QUESTIONS[2])
    greedy = _alone(engine, "epoch-2", prompt, 12)
    rows = [
        Row("epoch-2", prompt, 12, temperature=1.5, top_p=1e-6, seed=1),
        Row("epoch-2", prompt, 12, temperature=1e-4, seed=2),
    ]
    batch = engine.new_batch()
    batch.add(rows)
    _drain(batch, [])
    assert [r.tokens for r in rows] == [greedy, greedy]
