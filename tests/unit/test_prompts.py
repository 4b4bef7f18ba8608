"""Prompts through the published chat templates of common families (tests/fixtures/templates), each on a tiny
random model of the family's architecture: labels on the answer and the end-of-turn token only, the system prompt
folded in where a template has no system role, one prompt at train/eval/chat/serve/export, generation stopping
at the family's end-of-turn token, LoRA targets that exist; plus the fallback template of base models."""

from __future__ import annotations

import json

import pytest
import yaml

from qatune.config import Config
from qatune.console import QatuneError
from qatune.export import export
from qatune.generate import BASE, Engine
from qatune.models.load import load_base, load_tokenizer
from qatune.models.lora import attach_lora, linear_layer_names, lora_config
from qatune.models.placement import choose_placement
from qatune.prompts import (
    FALLBACK_TEMPLATE,
    IGNORE_INDEX,
    encode_pair,
    has_system_role,
    messages_for,
    prompt_ids,
    stop_token_ids,
)
from qatune.rundir import RunDir
from qatune.train.batching import load_examples
from template_models import FAMILIES, build_family_model

Q, A, S = "Who is the instructor?", "Professor Ada Lovelace teaches on Mondays.", "Answer in one sentence."
MISMATCH = "renders an assistant turn differently"


@pytest.fixture(scope="module", params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request, tmp_path_factory):
    fam = request.param
    return fam, build_family_model(tmp_path_factory.mktemp("family") / fam.name, fam)


def _fp32():
    return choose_placement("none", "fp32", device="cpu")


def _force(model, token_id: int):
    """Make greedy decoding pick `token_id` at every step."""

    def hook(module, inputs, output):
        output = output.clone()
        output[..., token_id] += 1e4
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def test_labels_are_the_answer_and_the_end_of_turn_token_only(family, capsys):
    fam, folder = family
    tok = load_tokenizer(str(folder))
    enc = encode_pair(tok, Q, A, 512)
    prompt = prompt_ids(tok, messages_for(Q))
    answer = tok.encode(A, add_special_tokens=False)
    end = tok.convert_tokens_to_ids(fam.end_of_turn)
    assert enc.input_ids == prompt + answer + [end]
    assert enc.labels == [IGNORE_INDEX] * len(prompt) + answer + [end]
    assert MISMATCH not in capsys.readouterr().err


def test_system_prompt_has_its_turn_or_is_folded_into_the_first_question(family):
    fam, folder = family
    tok = load_tokenizer(str(folder))
    assert has_system_role(tok) is fam.system_role
    prompt = prompt_ids(tok, messages_for(Q, system=S))
    folded = prompt_ids(tok, messages_for(f"{S}\n\n{Q}"))
    if fam.system_role:
        assert S in tok.decode(prompt)
    else:
        assert prompt == folded
    enc = encode_pair(tok, Q, A, 512, system=S)
    end = tok.convert_tokens_to_ids(fam.end_of_turn)
    assert enc.labels == [IGNORE_INDEX] * len(prompt) + tok.encode(A, add_special_tokens=False) + [end]


def test_one_prompt_at_train_eval_chat_serve_and_export(family, tmp_path):
    fam, folder = family
    tok = load_tokenizer(str(folder))
    prompt = prompt_ids(tok, messages_for(Q))
    split = tmp_path / "train.jsonl"
    split.write_text(json.dumps({"id": "1", "question": Q, "answer": A}) + "\n")
    assert load_examples(split, tok, 512, None, "key")[0].input_ids[: len(prompt)] == prompt

    model = load_base(str(folder), _fp32())
    seen: list[list[int]] = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True
    )
    engine = Engine(model, tok, [], "cpu")
    engine.generate(BASE, [messages_for(Q)], max_new_tokens=2)  # eval (and piped chat)
    assert seen[0] == prompt
    seen.clear()
    "".join(engine.stream(BASE, messages_for(Q), max_new_tokens=2))  # chat and serve stream through here
    assert seen[0] == prompt

    out = _export(fam, folder, tmp_path)
    from transformers import AutoTokenizer, GenerationConfig

    exported = AutoTokenizer.from_pretrained(str(out))
    ids = exported.apply_chat_template(messages_for(Q), add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(ids) == prompt
    eos = GenerationConfig.from_pretrained(str(out)).eos_token_id
    assert tok.convert_tokens_to_ids(fam.end_of_turn) in (eos if isinstance(eos, list) else [eos])


def _export(fam, folder, tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    config = Config(model=str(folder)).model_dump(mode="json")
    run.config_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    model = attach_lora(load_base(str(folder), _fp32()), lora_config(4, 8, 0.0, list(fam.targets)))
    model.save_pretrained(str(run.model_dir("best")))
    load_tokenizer(str(folder)).save_pretrained(str(run.model_dir("best")))
    return export(run.root, "best", tmp_path / "export", "fp32")


def test_generation_stops_at_the_end_of_turn_token(family):
    fam, folder = family
    tok = load_tokenizer(str(folder))
    end = tok.convert_tokens_to_ids(fam.end_of_turn)
    assert end in stop_token_ids(tok)
    model = load_base(str(folder), _fp32())
    engine = Engine(model, tok, [], "cpu")
    forced = _force(model, end)
    answer = engine.generate(BASE, [messages_for(Q)], max_new_tokens=8)[0]
    assert (answer.stopped, answer.new_tokens, answer.text) == (True, 1, "")
    stats: dict = {}
    assert "".join(engine.stream(BASE, messages_for(Q), max_new_tokens=8, stats=stats)) == ""
    assert (stats["stopped"], stats["new_tokens"]) == (True, 1)
    forced.remove()
    _force(model, tok.encode("a", add_special_tokens=False)[0])  # an ordinary token runs to the limit
    answer = engine.generate(BASE, [messages_for(Q)], max_new_tokens=8)[0]
    assert (answer.stopped, answer.new_tokens) == (False, 8)


def test_lora_targets_exist_for_the_architecture(family):
    fam, folder = family
    named = attach_lora(load_base(str(folder), _fp32()), lora_config(4, 8, 0.0, list(fam.targets)))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in named.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(fam.targets)
    base = load_base(str(folder), _fp32())
    linear = set(linear_layer_names(base))
    every = attach_lora(base, lora_config(4, 8, 0.0, ["all-linear"]))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in every.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == linear - {"lm_head"} and set(fam.targets) <= wrapped

    with pytest.raises(QatuneError) as err:
        attach_lora(load_base(str(folder), _fp32()), lora_config(4, 8, 0.0, [fam.targets[0], "attn.c_attn"]))
    message = str(err.value)
    assert "'attn.c_attn' matches no layer" in message and "\n" not in message
    assert all(name in message for name in fam.targets)


def test_a_generation_prompt_that_differs_from_the_trained_turn_is_caught(tiny_model_dir, capsys):
    """Planted: the generation prompt ends with a newline that the rendered assistant turn lacks."""
    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant ' + m['content'] }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}{% endif %}{{ '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    enc = encode_pair(tok, Q, A, 512)
    assert MISMATCH in capsys.readouterr().err
    prompt = prompt_ids(tok, messages_for(Q))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # trained on what generation sees: the generation prompt, the answer, the end-of-turn token
    assert enc.labels == [IGNORE_INDEX] * len(prompt) + tok.encode(A, add_special_tokens=False) + [end]


def _base_tokenizer(folder, adds_bos: bool):
    """A template-less tokenizer, like a base model's; `adds_bos`: it puts BOS before text, as Gemma's does."""
    from tokenizers.processors import TemplateProcessing

    tok = load_tokenizer(str(folder))
    tok.chat_template = None
    if adds_bos:
        tok._tokenizer.post_processor = TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)]
        )
    return tok


@pytest.mark.parametrize("adds_bos", [True, False])
def test_base_models_get_the_fallback_and_learn_to_stop_at_eos(tmp_path, adds_bos):
    gemma = next(f for f in FAMILIES if f.name == "gemma3")
    folder = build_family_model(tmp_path / "base", gemma)
    tok = _base_tokenizer(folder, adds_bos)
    enc = encode_pair(tok, Q, A, 512)
    assert tok.chat_template.endswith(FALLBACK_TEMPLATE)
    prompt = prompt_ids(tok, messages_for(Q))
    assert (prompt[0] == tok.bos_token_id) is adds_bos
    # EOS is rendered as text by the template and read back as the one special token
    assert enc.labels == [IGNORE_INDEX] * len(prompt) + tok.encode(A, add_special_tokens=False) + [tok.eos_token_id]
    assert stop_token_ids(tok)[0] == tok.eos_token_id
