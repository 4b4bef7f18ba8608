"""The vLLM backend's own logic, checked against the HF engine with a stand-in `vllm` module that runs
the same tiny model through the vLLM call shapes (token-id prompts, LoRARequest, prompt logprobs):
`--engine vllm` must give the same answers, stop flags and answer NLL as `--engine hf`."""

from __future__ import annotations

import contextlib
import sys
import types
from types import SimpleNamespace as NS

import pytest
import torch

from eval_run import make_run, run_config
from qatune.console import QatuneError
from qatune.evaluate.answer import evaluate
from qatune.rundir import RunDir
from qatune.storage import read_jsonl


class FakeLLM:
    """vllm.LLM's generate() contract, computed with transformers on the run's base and LoRA folders."""

    instances: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs):
        from qatune.models.load import load_base, load_tokenizer
        from qatune.models.placement import choose_placement

        self.kwargs = kwargs
        self.model = load_base(model, choose_placement())
        self.pad = load_tokenizer(model).pad_token_id
        self.peft = None
        FakeLLM.instances.append(self)

    @contextlib.contextmanager
    def _use(self, request):
        from peft import PeftModel

        if request is None:
            with self.peft.disable_adapter() if self.peft else contextlib.nullcontext():
                yield self.peft or self.model
            return
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.model, request.lora_path, adapter_name=request.lora_name)
        elif request.lora_name not in self.peft.peft_config:
            self.peft.load_adapter(request.lora_path, adapter_name=request.lora_name)
        self.peft.set_adapter(request.lora_name)
        yield self.peft

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        outs = []
        with self._use(lora_request) as model, torch.inference_mode():
            for prompt in prompts:
                ids = torch.tensor([prompt["prompt_token_ids"]])
                if params.prompt_logprobs is not None:
                    logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
                    tokens = ids[0].tolist()
                    plp = [None] + [{t: NS(logprob=float(logp[j - 1, t]))} for j, t in enumerate(tokens) if j]
                    outs.append(NS(prompt_logprobs=plp, outputs=[NS(token_ids=[0])]))
                    continue
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=False,
                    max_new_tokens=params.max_tokens,
                    eos_token_id=params.stop_token_ids,
                    pad_token_id=self.pad,
                )
                new = out[0, ids.shape[1] :].tolist()
                reason = "stop" if new and new[-1] in params.stop_token_ids else "length"
                outs.append(NS(outputs=[NS(token_ids=new, finish_reason=reason)]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kw: NS(**{"prompt_logprobs": None, **kw})
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, int_id, path: NS(lora_name=name, lora_int_id=int_id, lora_path=path)
    for name, module in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances.clear()
    return FakeLLM


def test_vllm_engine_matches_the_hf_engine(tmp_path, lively_model_dir, fake_vllm):
    """On the prompt-sensitive tiny model, so a wrong prompt or adapter would change the answers."""
    run = make_run(tmp_path / "run", lively_model_dir, epochs=(1,))
    hf = evaluate(run, run_config(run), name="hf")
    via_vllm = evaluate(run, run_config(run, engine="vllm"), name="vllm")
    llm = fake_vllm.instances[0]
    assert llm.kwargs["enable_lora"] and llm.kwargs["max_lora_rank"] == 8 and llm.kwargs["max_loras"] == 1
    assert llm.kwargs["load_format"] == "safetensors" and llm.kwargs["dtype"] == "float32"
    rows = {n: read_jsonl(RunDir(run).eval_generations(n)) for n in ("hf", "vllm")}
    key = lambda r: (r["model"], r["question_id"])  # noqa: E731
    # the model's own words where it answered (a check may show the refusal instead; raw_answer keeps them)
    answered = [r for r in rows["hf"] if r["abstained_by"] not in ("question", "retrieval")]
    generated = [r for r in answered if r["model"] != "retrieval"]
    own = [r.get("raw_answer", r["answer"]) for r in generated]
    assert len(own) > 4 and len(set(own)) == len(own), "answers depend on the question and the model"
    for a, b in zip(sorted(rows["hf"], key=key), sorted(rows["vllm"], key=key), strict=True):
        assert (a["answer"], a["stopped"], a["new_tokens"]) == (b["answer"], b["stopped"], b["new_tokens"])
        if a["metrics"]["answer_nll"] is not None:
            assert b["metrics"]["answer_nll"] == pytest.approx(a["metrics"]["answer_nll"], rel=1e-4)
    assert hf["models"]["epoch-1"]["rougeL"] == via_vllm["models"]["epoch-1"]["rougeL"]


def test_vllm_missing_is_a_one_line_error(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    run = make_run(tmp_path / "run", tiny_model_dir, epochs=())
    with pytest.raises(QatuneError, match=r"pip install 'qatune\[vllm\]'"):
        evaluate(run, run_config(run, engine="vllm"))
