"""`qatune export --format gguf`: the GGUF holds the merged weights (in llama.cpp's layout), the tokenizer and the
chat template; llama.cpp itself tokenizes qatune's prompts to the same ids and answers as qatune does (except at
near-ties); the Modelfile's template renders qatune's prompt; what the writer does not cover is refused in one line
with nothing left behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from adapter_runs import QUESTIONS, make_run
from qatune.config import load_for_run
from qatune.console import QatuneError
from qatune.export import MARKER, export
from qatune.generate import load_engine
from qatune.portable.agreement import first_gap
from qatune.prompts import messages_for, prompt_ids
from template_models import FAMILIES, build_family_model

TOKENS = 12
NEAR_TIE = 0.05  # top-2 logit gap of the fp32 model below which f16 weights may pick the other token


def _family(name):
    return next(f for f in FAMILIES if f.name == name)


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, lively_model_dir):
    return make_run(tmp_path_factory.mktemp("gguf") / "run", lively_model_dir)


@pytest.fixture(scope="module")
def gemma_run(tmp_path_factory):
    # llama.cpp scales Gemma 3 attention by 1/sqrt(head_dim): the tiny model says the same
    folder = build_family_model(
        tmp_path_factory.mktemp("gemma3") / "tiny-gemma3",
        _family("gemma3"),
        query_pre_attn_scalar=8,
        initializer_range=0.3,
    )
    return make_run(tmp_path_factory.mktemp("gguf") / "run", folder)


def _engine(run, name):
    return load_engine(run, load_for_run(run, None, {}, save=False), names=[name])


def _fields(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return reader, {key: field.contents() for key, field in reader.fields.items()}


def test_gguf_holds_the_merged_weights_tokenizer_and_template(llama_run, tmp_path):
    import gguf

    out = export(llama_run, "epoch-1", tmp_path / "f16", fmt="gguf")
    assert sorted(p.name for p in out.iterdir()) == sorted(["Modelfile", "README.md", MARKER, "model.gguf"])
    marker = json.loads((out / MARKER).read_text())
    assert (marker["format"], marker["quant"], marker["model"]) == ("gguf", "f16", "epoch-1")
    reader, meta = _fields(out / "model.gguf")
    engine = _engine(llama_run, "epoch-1")
    tokenizer = engine.tokenizer
    assert meta["general.architecture"] == "llama"
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    assert meta["tokenizer.ggml.tokens"] == [vocab[i] for i in range(len(vocab))]
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert meta["tokenizer.ggml.add_bos_token"] is False
    with engine.use("epoch-1") as model:
        merged = {k: v.detach().numpy() for k, v in model.merge_and_unload().state_dict().items()}
    tensors = {t.name: t for t in reader.tensors}
    q = np.asarray(tensors["blk.1.attn_q.weight"].data, dtype=np.float32)
    heads, rows = 4, q.shape[0] // 8  # undo the rotary interleave: llama.cpp's pairs back to two halves
    unpermuted = q.reshape(heads, rows, 2, -1).swapaxes(1, 2).reshape(q.shape)
    expected = merged["model.layers.1.self_attn.q_proj.weight"]
    assert not np.allclose(unpermuted, q)
    np.testing.assert_allclose(unpermuted, expected, atol=2e-3, rtol=2e-3)
    assert tensors["blk.1.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_array_equal(
        tensors["blk.1.attn_norm.weight"].data, merged["model.layers.1.input_layernorm.weight"]
    )

    out8 = export(llama_run, "epoch-1", tmp_path / "q8", fmt="gguf", quant="q8_0")
    v = {t.name: t for t in _fields(out8 / "model.gguf")[0].tensors}["blk.1.attn_v.weight"]
    assert v.tensor_type == gguf.GGMLQuantizationType.Q8_0
    values = gguf.quants.dequantize(v.data, v.tensor_type).reshape(expected.shape[0] // 2, -1)
    reference = merged["model.layers.1.self_attn.v_proj.weight"]
    assert np.abs(values - reference).max() <= np.abs(reference).max() / 127


def test_gemma3_norms_become_plain_scales_with_its_window_and_rope(gemma_run, tmp_path):
    out = export(gemma_run, "epoch-1", tmp_path / "gemma", fmt="gguf")
    reader, meta = _fields(out / "model.gguf")
    assert meta["general.architecture"] == "gemma3"
    assert meta["gemma3.attention.sliding_window_pattern"] == [True, True]
    assert meta["gemma3.rope.freq_base"] == 1_000_000.0 and meta["gemma3.rope.freq_base_swa"] == 10_000.0
    assert meta["gemma3.attention.key_length"] == 8
    norm = next(t for t in reader.tensors if t.name == "blk.0.attn_q_norm.weight")
    engine = _engine(gemma_run, "epoch-1")
    hf = engine.model.get_base_model().model.layers[0].self_attn.q_norm.weight.detach().numpy()
    np.testing.assert_allclose(norm.data, hf + 1.0)  # Gemma3RMSNorm multiplies by (1 + weight)


def _answers_agree(engine, name, questions, answers):
    """Indices of questions whose answers differ; each must differ first where the fp32 model's top-2 tokens are
    within NEAR_TIE of each other."""
    expected = engine.generate(name, [messages_for(q) for q in questions], max_new_tokens=TOKENS, batch_size=1)
    differ = [i for i, (want, got) in enumerate(zip(expected, answers, strict=True)) if want.text != got]
    for i in differ:
        _, gap = first_gap(engine, name, messages_for(questions[i]), expected[i].text, answers[i])
        assert gap < NEAR_TIE, (questions[i], expected[i].text, answers[i], gap)
    return differ


@pytest.mark.parametrize("which", ["llama", "gemma3"])
def test_llama_cpp_tokenizes_and_answers_like_qatune(which, llama_run, gemma_run, tmp_path, llama_cpp):
    from qatune.rag.ask import GGUFModel

    run = llama_run if which == "llama" else gemma_run
    engine = _engine(run, "epoch-1")
    out = export(run, "epoch-1", tmp_path / which, fmt="gguf")
    model = GGUFModel(out / "model.gguf")
    for question in QUESTIONS:
        messages = messages_for(question)
        assert model.prompt(messages) == prompt_ids(engine.tokenizer, messages)
    answers = [model.answer(messages_for(q), TOKENS) for q in QUESTIONS]
    differ = _answers_agree(engine, "epoch-1", QUESTIONS, answers)
    assert len(differ) <= 1, differ
    quantized = GGUFModel(export(run, "epoch-1", tmp_path / f"{which}-q8", fmt="gguf", quant="q8_0") / "model.gguf")
    assert quantized.prompt(messages_for(QUESTIONS[0])) == prompt_ids(engine.tokenizer, messages_for(QUESTIONS[0]))
    assert all(isinstance(quantized.answer(messages_for(q), TOKENS), str) for q in QUESTIONS)


# ---- the Modelfile: its Go template, rendered for the conversations qatune builds, gives qatune's prompt ----


def _go_render(template: str, messages: list[dict], system: str) -> str:
    """Just the Go template forms the Modelfile uses, as Ollama renders them."""
    template = template.replace('{{ "\\n\\n" }}', "\n\n").replace('{{ "{{" }}', "\x00")
    template = template.replace("{{ if .System }}", "{{ if $.System }}").replace("{{ .System }}", "{{ $.System }}")
    head, rest = template.split("{{ range $i, $_ := .Messages }}")
    body, tail = rest.rsplit("{{ end }}{{ end }}", 1)
    user, assistant = re.fullmatch(
        r'{{ if eq .Role "user" }}(.*){{ else if eq .Role "assistant" }}(.*)', body, re.S
    ).groups()

    def fill(text: str, i: int, content: str = "") -> str:
        text = re.sub(
            r"{{ if and \$\.System \(eq \$i 1\) }}(.*?){{ end }}",
            lambda m: m[1] if system and i == 1 else "",
            text,
            flags=re.S,
        )
        text = re.sub(r"{{ if \$\.System }}(.*?){{ end }}", lambda m: m[1] if system else "", text, flags=re.S)
        return text.replace("{{ $.System }}", system).replace("{{ .Content }}", content)

    everything = [{"role": "system", "content": system}, *messages] if system else messages
    out = fill(head, -1)
    for i, message in enumerate(everything):
        if message["role"] != "system":
            out += fill(user if message["role"] == "user" else assistant, i, message["content"])
    return (out + tail).replace("\x00", "{{")


def _modelfile(text: str) -> tuple[str, str, list[str]]:
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)[1]
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    stops = [json.loads(s) for s in re.findall(r"^PARAMETER stop (.*)$", text, re.M)]
    return template, system[1] if system else "", stops


@pytest.mark.parametrize("template", ["chatml", "smollm2", "gemma3", "fallback"])
def test_the_modelfile_template_renders_the_prompt_qatune_trains_on(template, lively_model_dir):
    from transformers import AutoTokenizer

    from qatune.portable.card import modelfile
    from qatune.prompts import BOS_PREFIX, FALLBACK_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(lively_model_dir)
    sources = {"smollm2": _family("smollm2").chat_template(), "gemma3": _family("gemma3").chat_template()}
    sources["fallback"] = BOS_PREFIX + FALLBACK_TEMPLATE
    tokenizer.chat_template = sources.get(template, tokenizer.chat_template)
    go, system, stops = _modelfile(modelfile(tokenizer, add_bos=template == "fallback"))
    assert "<|im_end|>" in stops
    if template == "smollm2":
        assert system.startswith("You are a helpful AI assistant named SmolLM")
    conversations = [[("user", "When is the exam?")], [("user", "Hi?"), ("assistant", "Hello."), ("user", "Why?")]]
    for turns in conversations:
        messages = [{"role": r, "content": c} for r, c in turns]
        jinja = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if template == "fallback":  # llama.cpp adds the BOS itself (add_bos_token) for this tokenizer
            jinja = jinja.removeprefix(tokenizer.bos_token)
        assert _go_render(go, messages, system) == jinja
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "When?"}]
    from qatune.prompts import for_template

    jinja = tokenizer.apply_chat_template(
        for_template(tokenizer, with_system), add_generation_prompt=True, tokenize=False
    )
    assert _go_render(go, with_system[1:], "Be brief.") == jinja.removeprefix(
        tokenizer.bos_token if template == "fallback" else ""
    )


# ---- refusals: one line, exit 2, nothing written ----


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fmt": "onnx"}, "--format 'onnx' is not one of transformers, gguf"),
        ({"fmt": "gguf", "quant": "q4_k"}, "--quant 'q4_k' is not one of f16, q8_0"),
        ({"quant": "q8_0"}, "--quant applies to --format gguf only"),
    ],
)
def test_unknown_format_or_quant_is_refused(llama_run, tmp_path, kwargs, match):
    with pytest.raises(QatuneError, match=re.escape(match)):
        export(llama_run, "epoch-1", tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def _cli_gguf(run, model, out):
    args = ["export", "--run", str(run), "--format", "gguf", "--model", model, "--out", str(out)]
    return subprocess.run([sys.executable, "-m", "qatune", *args], capture_output=True, text=True, timeout=120)


def test_an_architecture_the_writer_does_not_cover_is_refused_before_any_weight(tmp_path):
    folder = build_family_model(tmp_path / "gemma2", _family("gemma2"))
    run = make_run(tmp_path / "run", folder, seeds={"epoch-1": 1})
    proc = _cli_gguf(run, "epoch-1", tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "GGUF export covers gemma3_text, llama, mistral, qwen2 models; this model is 'gemma2'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    proc = _cli_gguf(run, "epoch-9", tmp_path / "out")
    assert proc.returncode == 2 and "no model 'epoch-9'" in proc.stderr and not (tmp_path / "out").exists()
