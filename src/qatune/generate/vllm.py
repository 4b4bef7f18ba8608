"""Optional vLLM backend for eval on a GPU (`--engine vllm`): the same calls as engine.Engine, with
each adapter served as a LoRARequest on one base. Imported only when that engine is asked for."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.console import QatuneError, info
from qatune.generate.engine import BASE, Generation
from qatune.prompts import IGNORE_INDEX, encode_pair, ensure_chat_template, prompt_ids, stop_token_ids

if TYPE_CHECKING:
    from qatune.config import Config

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class VllmEngine:
    """Greedy answers and teacher-forced answer NLL through vllm.LLM; `name` picks an adapter or base."""

    def __init__(self, llm: Any, tokenizer: Any, adapters: dict[str, Path]):
        from vllm.lora.request import LoRARequest

        self.llm = llm
        self.tokenizer = tokenizer
        self.device = "cuda"
        self.stop_ids = stop_token_ids(tokenizer)
        ensure_chat_template(tokenizer)
        self._lora = {n: LoRARequest(n, i + 1, str(p)) for i, (n, p) in enumerate(adapters.items())}

    @property
    def names(self) -> list[str]:
        return [BASE, *self._lora]

    def chooses(self, name: str, temperature: float = 0.0) -> bool:
        """vLLM serves no grounded models: every answer is written."""
        return False

    def _request(self, name: str) -> Any:
        if name not in self.names:
            raise QatuneError(f"unknown model {name!r}; available: {', '.join(self.names)}")
        return self._lora.get(name)

    def generate(
        self,
        name: str,
        conversations: list[list[dict]],
        *,
        max_new_tokens: int = 256,
        batch_size: int | None = None,
        references: list[str] | None = None,
        **_: Any,
    ) -> list[Generation]:
        """Greedy decoding; vLLM batches internally, so batch_size is not used. With `references`, each
        Generation carries its reference answer's NLL (`answer_nll`)."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=self.stop_ids)
        prompts = [{"prompt_token_ids": prompt_ids(self.tokenizer, c)} for c in conversations]
        outs = self.llm.generate(prompts, params, lora_request=self._request(name), use_tqdm=False)
        gens = [self._finish(list(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outs]
        if references is None:
            return gens
        pairs = [(c[-1]["content"], r) for c, r in zip(conversations, references, strict=True)]
        return [replace(g, reference_nll=n) for g, n in zip(gens, self.answer_nll(name, pairs), strict=True)]

    def _finish(self, tokens: list[int], finish_reason: str | None) -> Generation:
        """Like Engine: text before the first stop token; `stop` from vLLM also means a stop token came."""
        end = next((j for j, t in enumerate(tokens) if t in self.stop_ids), None)
        kept = tokens if end is None else tokens[:end]
        stopped = end is not None or finish_reason == "stop"
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Generation(text=text, stopped=stopped, new_tokens=len(kept) + int(stopped))

    def answer_nll(
        self, name: str, pairs: list[tuple[str, str]], *, batch_size: int | None = None, max_length: int = 1024
    ) -> list[float | None]:
        """Mean NLL per answer token from vLLM's prompt logprobs (position j scores token j given < j)."""
        from vllm import SamplingParams

        encoded = [encode_pair(self.tokenizer, q, a, max_length) for q, a in pairs]
        todo = [i for i, e in enumerate(encoded) if e is not None and e.answer_tokens > 0]
        values: list[float | None] = [None] * len(pairs)
        if not todo:
            return values
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": encoded[i].input_ids} for i in todo]  # type: ignore[union-attr]
        outs = self.llm.generate(prompts, params, lora_request=self._request(name), use_tqdm=False)
        for i, out in zip(todo, outs, strict=True):
            e = encoded[i]
            answer = [j for j, label in enumerate(e.labels) if label != IGNORE_INDEX]  # type: ignore[union-attr]
            nll = [-out.prompt_logprobs[j][e.input_ids[j]].logprob for j in answer]  # type: ignore[union-attr]
            values[i] = float(sum(nll) / len(nll))
        return values


def _max_rank(adapters: dict[str, Path]) -> int:
    rank = max((json.loads((p / "adapter_config.json").read_text()).get("r", 8) for p in adapters.values()), default=8)
    return next((r for r in VLLM_LORA_RANKS if r >= rank), rank)


def _check_weights(model_path: str, adapters: dict[str, Path], allow_pickle: bool) -> None:
    from qatune.models.resolve import check_safe_weights

    check_safe_weights(model_path, allow_pickle)
    for path in adapters.values():
        if not (path / "adapter_model.safetensors").exists() and not allow_pickle:
            raise QatuneError(
                "adapter weights must be adapter_model.safetensors (pickle refused; --allow-pickle to override)",
                path=path,
            )


def load_vllm_engine(run: Path, config: Config, adapters: list[str]) -> VllmEngine:
    """The run's base in vLLM with the named adapters enabled as LoRA requests."""
    try:
        from vllm import LLM
    except ImportError:
        raise QatuneError(
            "--engine vllm needs vLLM on a CUDA machine: pip install 'qatune[vllm]' (or use --engine hf)"
        ) from None
    from qatune.models.load import load_tokenizer
    from qatune.models.placement import choose_placement
    from qatune.models.resolve import resolve_model
    from qatune.rundir import RunDir

    rundir = RunDir(run)
    folders = {n: rundir.model_dir(n) for n in adapters if n != BASE}
    model_path = resolve_model(config.model)
    _check_weights(model_path, folders, config.allow_pickle)
    placement = choose_placement("none", config.train.precision)
    info(f"vLLM: {model_path} in {placement.precision}, {len(folders)} LoRA adapter(s)")
    llm = LLM(
        model=model_path,
        tokenizer=model_path,
        dtype=_DTYPES[placement.precision],
        trust_remote_code=config.trust_remote_code,
        seed=config.train.seed,
        load_format="auto" if config.allow_pickle else "safetensors",
        enable_lora=bool(folders),
        max_lora_rank=_max_rank(folders),
        max_loras=max(1, len(folders)),
    )
    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code)
    return VllmEngine(llm, tokenizer, folders)
