"""The fast loss paths give the plain forward's loss and gradients: logits only at answer positions, a
shared prompt prefix computed once, padding-free packing (no attention across examples), extra padding."""

from __future__ import annotations

import pytest
import torch

from qatune.models.load import load_base, load_tokenizer
from qatune.models.lora import attach_lora, lora_config
from qatune.models.placement import choose_placement
from qatune.prompts import IGNORE_INDEX
from qatune.train.batching import collate, load_examples, shared_prefix_len
from qatune.train.loss import AnswerLoss, full_logits_loss
from train_runs import write_data


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    tok = load_tokenizer(str(tiny_model_dir))
    run = write_data(tmp_path_factory.mktemp("loss") / "run", n_train=6, n_val=1)
    examples = load_examples(run / "data" / "train.jsonl", tok, 96, None, "tiny")
    torch.manual_seed(0)
    model = attach_lora(
        load_base(str(tiny_model_dir), choose_placement("none", "fp32")), lora_config(4, 8, 0.0, ["q_proj", "v_proj"])
    )
    with torch.no_grad():  # non-zero B so the adapter takes part in the forward
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    return tok, examples, model


def _loss_and_grads(fn, model):
    model.zero_grad(set_to_none=True)
    loss, n = fn()
    (loss / n).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    return (loss / n).item(), int(n), grads


def _close(a, b):
    assert a[1] == b[1]
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    for key in a[2]:
        torch.testing.assert_close(a[2][key], b[2][key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prefix", [False, True])
def test_answer_only_logits_equal_full_logits(setup, prefix):
    tok, exs, model = setup
    p = shared_prefix_len(exs) if prefix else 0
    assert not prefix or p > 0
    batch = collate(exs, tok.pad_token_id, prefix_len=p)
    fast = _loss_and_grads(lambda: AnswerLoss(model)(**batch), model)
    full = _loss_and_grads(lambda: full_logits_loss(model, collate(exs, tok.pad_token_id)), model)
    _close(fast, full)


def test_shared_prefix_equals_no_prefix(setup):
    tok, exs, model = setup
    loss = AnswerLoss(model)
    with_prefix = _loss_and_grads(lambda: loss(**collate(exs, tok.pad_token_id, shared_prefix_len(exs))), model)
    without = _loss_and_grads(lambda: loss(**collate(exs, tok.pad_token_id)), model)
    _close(with_prefix, without)


def test_padding_does_not_change_the_loss(setup):
    tok, exs, model = setup
    loss = AnswerLoss(model)
    alone = _loss_and_grads(lambda: loss(**collate(exs[:1], tok.pad_token_id)), model)
    longest = max(exs, key=lambda e: len(e.input_ids))
    assert len(longest.input_ids) > len(exs[0].input_ids)
    batch = collate([exs[0], longest], tok.pad_token_id)
    batch["targets"][1] = IGNORE_INDEX  # only example 0 counts; it now carries padding
    padded = _loss_and_grads(lambda: loss(**batch), model)
    _close(alone, padded)


def test_packed_examples_do_not_attend_across_examples(setup):
    """Each example's loss inside a packed row equals its loss alone; any cross-example attention would
    change the later examples' losses."""
    tok, exs, model = setup
    loss = AnswerLoss(model)
    row = exs[:4]
    offsets = [0]
    for e in row:
        offsets.append(offsets[-1] + len(e.input_ids))
    with torch.no_grad():
        for k, e in enumerate(row):
            alone = loss(**collate([e], tok.pad_token_id))
            packed = collate(row, tok.pad_token_id, packed=True)
            keep = torch.zeros_like(packed["targets"], dtype=torch.bool)
            keep[0, offsets[k] : offsets[k + 1]] = True
            packed["targets"][~keep] = IGNORE_INDEX
            inside = loss(**packed)
            assert inside[1] == alone[1] == e.answer_tokens
            assert inside[0].item() == pytest.approx(alone[0].item(), rel=1e-5), f"example {k}"
    whole = _loss_and_grads(lambda: loss(**collate(row, tok.pad_token_id, packed=True)), model)
    padded = _loss_and_grads(lambda: loss(**collate(row, tok.pad_token_id)), model)
    _close(whole, padded)
