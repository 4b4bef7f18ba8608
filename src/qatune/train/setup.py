"""Training setup: placement and accelerator, the tokenized splits, the base model with LoRA (and CUDA
kernels when available), batch size, the printed memory plan, and saving an adapter folder."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from qatune import __version__, console, manifest
from qatune.config import Config, TrainConfig
from qatune.console import QatuneError, info, warn
from qatune.rag.prompt import shortener
from qatune.rundir import RunDir
from qatune.storage import atomic_dir, atomic_write_json
from qatune.train.batching import auto_batch_size, load_examples, shared_prefix_len
from qatune.train.leads import leader, leads_on
from qatune.train.lengths import announce_heads, fits_in, grounded_share_for, training_lengths
from qatune.train.loop import Setup
from qatune.train.lr import resolve_lr
from qatune.train.telemetry import TrainLog

if TYPE_CHECKING:
    from qatune.models.placement import Placement

CPU_TOKEN_BUDGET = 1024  # tokens per micro-batch on CPU: throughput is flat beyond this
GPU_TOKEN_BUDGET = 16384
FEW_PAIRS = 20


@dataclass(frozen=True)
class SetupMeta:
    """What setup chose and found, for the summary and the manifest."""

    placement: Placement
    model_path: str
    train_examples: int  # closed-book and grounded
    val_examples: int  # the recall questions (or unseen-fact pairs when there are none) that pick `best`
    unseen_examples: int
    trainable_params: int
    refusal: str  # what the models learn to say when the data does not answer
    refusal_questions: int  # unanswerable questions trained with it


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _accelerator(placement: Any) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu = placement.device == "cpu"
    if placement.precision == "fp16" and cpu:
        raise QatuneError("--precision fp16 needs a CUDA GPU; use fp32 or bf16 on CPU")
    # accelerate keeps one process-wide state that refuses another precision; a second training in the same
    # process (a sweep run, a library caller) starts from a clean one. The process group is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=cpu, mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[placement.precision])


def _gpu_options(tc: TrainConfig, device: str) -> dict[str, Any]:
    """CUDA-only speed-ups, each optional: Liger kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy)."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    if not device.startswith("cuda"):
        if tc.liger is True:
            warn("Liger kernels need CUDA; ignored on CPU")
        return {"liger": False}
    if tc.liger is True and not installed:
        raise QatuneError("liger: true needs liger-kernel: pip install 'qatune[gpu]'")
    return {"liger": bool(tc.liger is True or (tc.liger == "auto" and installed))}


def load_model(config: Config, model_path: str, placement: Any, gpu: dict[str, Any], batch_tokens: int = 512) -> Any:
    from qatune.models.load import load_base
    from qatune.models.lora import attach_lora, lora_config

    tc = config.train
    base = load_base(
        model_path,
        placement,
        trust_remote_code=config.trust_remote_code,
        allow_pickle=config.allow_pickle,
        for_training=True,
        attn_implementation="sdpa",
        batch_tokens=batch_tokens,
    )
    base.config.use_cache = False
    if gpu["liger"]:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=base, cross_entropy=False, fused_linear_cross_entropy=False)
    if tc.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    seed_all(tc.seed)  # LoRA initialisation depends only on the seed
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return attach_lora(base, lora_config(tc.lora_r, tc.lora_alpha, tc.lora_dropout, tc.target_modules))


def setup(rundir: RunDir, config: Config, key: str, fresh: bool) -> tuple[Setup, SetupMeta]:
    """Load tokenizer, data and model; choose placement, batch size and speed-ups; print the memory plan."""
    import torch

    from qatune.models.load import load_tokenizer
    from qatune.models.placement import choose_placement
    from qatune.models.resolve import resolve_model
    from qatune.prompts import ensure_chat_template
    from qatune.train.loss import AnswerLoss

    tc = config.train
    placement = choose_placement(tc.quant, tc.precision, cpu_bf16=True)
    acc = _accelerator(placement)
    if not acc.is_main_process:
        console.console.quiet = True  # one voice: only the main process prints
    placement = replace(placement, device=str(acc.device))
    if tc.threads or (acc.num_processes > 1 and placement.device == "cpu"):
        torch.set_num_threads(tc.threads or max(1, (os.cpu_count() or 1) // acc.num_processes))
    model_path = resolve_model(config.model)
    tokenizer = load_tokenizer(model_path, trust_remote_code=config.trust_remote_code)
    ensure_chat_template(tokenizer)
    refused, refusal = _refusals(rundir, tc, acc)
    tc = tc.model_copy(
        update={
            "grounded_share": grounded_share_for(tc, rundir),
            "answer_lead": "on" if leads_on(tc, rundir) else "off",
        }
    )
    train_ex, grounded_start, val_ex, unseen_ex, recall_rows = _load_splits(
        rundir, tokenizer, tc, model_path, acc, refused, refusal
    )
    gpu = _gpu_options(tc, placement.device)
    lengths = [len(e.input_ids) for e in train_ex]
    budget = (GPU_TOKEN_BUDGET if placement.device.startswith("cuda") else CPU_TOKEN_BUDGET) * acc.num_processes
    batch_size = tc.batch_size if isinstance(tc.batch_size, int) else auto_batch_size(lengths, budget)
    model = load_model(config, model_path, placement, gpu, max(lengths) * batch_size)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    prefix = 0 if tc.packing or tc.gradient_checkpointing else shared_prefix_len(train_ex + val_ex + unseen_ex)
    loss = AnswerLoss(model, fused_ce=gpu["liger"])
    prefix = _verified_prefix(loss, train_ex, tokenizer.pad_token_id, prefix, placement.device)
    # load_base already placed the weights (k-bit ones must not be moved again)
    loss = acc.prepare(loss, device_placement=[False])
    if acc.is_main_process and fresh:
        shutil.rmtree(rundir.checkpoints_dir, ignore_errors=True)
    trainable = sum(p.numel() for p in params.values())
    meta = SetupMeta(
        placement, model_path, len(train_ex), len(val_ex), len(unseen_ex), trainable, refusal, len(refused)
    )
    _announce(config, meta, batch_size, acc.num_processes, prefix)
    announce_heads(tc, train_ex, tokenizer, max(lengths), leads=tc.answer_lead == "on")
    info(_memory_plan(model, trainable, max(lengths) * batch_size, placement))
    log = TrainLog(rundir, enabled=False, resume_at=None)  # opened by _fit_all once the start point is known
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    s = Setup(
        rundir=rundir,
        tc=tc,
        lr=resolve_lr(tc.lr, frozen),
        accelerator=acc,
        model=model,
        loss=loss,
        params=params,
        train=train_ex,
        grounded_start=grounded_start,
        val=val_ex,
        val_unseen=unseen_ex,
        pad_id=tokenizer.pad_token_id,
        batch_size=batch_size,
        prefix_len=prefix,
        packed=tc.packing,
        save_adapter=lambda name, extra: None,
        log=log,
        initial={n: p.detach().clone() for n, p in params.items()},
    )
    s.save_adapter = lambda name, extra: _save_adapter(s, tokenizer, config, key, name, extra)
    from qatune.train.recall import recall_scorer  # every process scores, so all agree on `best`

    s.recall_score = recall_scorer(model, tokenizer, recall_rows, placement.device, acc.autocast)
    return s, meta


def _verified_prefix(loss: Any, examples: list, pad_id: int, prefix: int, device: str) -> int:
    """Keep prompt-prefix sharing only if it reproduces the plain forward on a sample (a model whose cache
    cannot be shared across a batch falls back to full rows)."""
    import torch

    from qatune.train.batching import collate, to_device

    if not prefix:
        return 0
    sample = examples[:2]
    loss.eval()
    try:
        with torch.no_grad():
            shared = loss(**to_device(collate(sample, pad_id, prefix), device))[0].float()
            plain = loss(**to_device(collate(sample, pad_id), device))[0].float()
        ok = bool(torch.allclose(shared, plain, rtol=2e-2))
    except Exception:  # any failure of the shortcut means: use the plain path
        ok = False
    finally:
        loss.train()
    if not ok:
        info("shared prompt prefix not supported by this model's cache: using full rows")
    return prefix if ok else 0


def _load_splits(
    rundir: RunDir, tokenizer: Any, tc: TrainConfig, model_path: str, acc: Any, refused: list[dict], refusal: str
) -> tuple[list, int | None, list, list, list]:
    """Training examples (refusals after the pairs, grounded ones last, from the returned index on), recall
    validation, unseen-fact validation, recall rows (scored against the answers' leads where closed-book examples
    train leads)."""
    from qatune.storage import read_jsonl
    from qatune.train.recall import is_recall

    cache, head = rundir.token_cache_dir, tc.answer_head
    length, grounded_length = training_lengths(tc, tokenizer, rundir, model_path)
    lead = leader(tokenizer, head) if tc.answer_lead == "on" and head else None
    train_ex = load_examples(rundir.split_file("train"), tokenizer, length, cache, model_path, head, lead)
    if not train_ex:
        raise QatuneError(
            "no usable training pairs; check the data or raise --max-length", path=rundir.split_file("train")
        )
    if refused:
        from qatune.train.refusals import REFUSALS_FILE

        train_ex += load_examples(rundir.train_dir / REFUSALS_FILE, tokenizer, length, cache, model_path)
    grounded_start = None
    if tc.grounded:
        from qatune.rag.examples import GROUNDED_FILE, write_grounded_split

        if acc.is_main_process:  # one writer; the other processes read what it wrote
            write_grounded_split(
                rundir,
                tc.seed,
                tc.rag_k,
                fits=fits_in(tokenizer, grounded_length, head),
                oracle_share=tc.oracle_share,
                refusals=refused if tc.refusal_grounded else [],
                refusal=refusal,
                shorten=shortener(tokenizer, head),
            )
        acc.wait_for_everyone()
        grounded = rundir.train_dir / GROUNDED_FILE
        grounded_start = len(train_ex)
        train_ex += load_examples(grounded, tokenizer, grounded_length, cache, model_path, head)
    val_path = rundir.split_file("val")
    val_rows = read_jsonl(val_path) if val_path.exists() else []
    val_ex = load_examples(val_path, tokenizer, length, cache, model_path, lead=lead) if val_rows else []
    recall_ids = {str(r["id"]) for r in val_rows if is_recall(r)}
    recall = [e for e in val_ex if e.id in recall_ids]
    unseen = [e for e in val_ex if e.id not in recall_ids]
    if len(train_ex) < FEW_PAIRS:
        warn(f"only {len(train_ex)} training pairs: expect a weak or over-fitted model (aim for 100+)")
    if not val_ex:
        warn("no validation questions: no early stopping, and 'best' is the last epoch")
    elif not recall:
        warn("no reworded questions about trained facts to validate on: 'best' is chosen by unseen-fact loss")
    recall_rows = [
        {**r, "answer": lead(r["answer"]) if lead else r["answer"]} for r in val_rows if str(r["id"]) in recall_ids
    ]
    return train_ex, grounded_start, (recall or unseen), (unseen if recall else []), recall_rows


def _refusals(rundir: RunDir, tc: TrainConfig, acc: Any) -> tuple[list[dict], str]:
    """The unanswerable questions trained with the refusal (also written as RUN/train/refusals.jsonl), and the
    refusal text."""
    from qatune.train.refusals import refusal_questions, write_refusal_split
    from qatune.trust.refusal import run_refusal

    refusal = run_refusal(rundir, tc.refusal)
    questions = refusal_questions(rundir, tc.refusal_examples, tc.seed) if tc.refusal_examples > 0 else []
    if questions and acc.is_main_process:
        write_refusal_split(rundir, questions, refusal)
    acc.wait_for_everyone()
    return questions, refusal


def _announce(config: Config, meta: SetupMeta, batch_size: int, processes: int, prefix: int) -> None:
    tc = config.train
    info(
        f"train: {meta.train_examples} pairs ({meta.val_examples} validation), model {config.model}; "
        f"{meta.placement.reason}; batch {batch_size} x accumulation {tc.grad_accum}"
        f"{' x ' + str(processes) + ' processes' if processes > 1 else ''}, "
        f"{'packed rows' if tc.packing else 'length-grouped padding'}, shared prompt prefix {prefix} tokens"
    )


def _memory_plan(model: Any, trainable: int, batch_tokens: int, placement: Any) -> str:
    """Rough need: frozen weights + LoRA weights/grads/AdamW moments (fp32) + activations kept for backward."""
    import psutil
    import torch

    cfg = model.get_base_model().config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    lora = trainable * 4 * 4
    act_bytes = 2 if placement.precision in ("bf16", "fp16") else 4
    hidden, inter = cfg.hidden_size, getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    activations = batch_tokens * cfg.num_hidden_layers * (10 * hidden + 4 * inter) * act_bytes
    total = weights + lora + activations
    if placement.device.startswith("cuda"):
        free = torch.cuda.mem_get_info(torch.device(placement.device))[0]
    else:
        free = psutil.virtual_memory().available
    gb = 1024**3
    line = (
        f"memory needed ~{total / gb:.2f} GB (weights {weights / gb:.2f} + LoRA and optimizer "
        f"{lora / gb:.3f} + activations {activations / gb:.2f} for {batch_tokens} tokens/batch); "
        f"available {free / gb:.1f} GB on {placement.device}"
    )
    if total > free:
        warn(line + ": likely too much; lower --batch-size or --max-length")
    return line


def _save_adapter(s: Setup, tokenizer: Any, config: Config, key: str, name: str, extra: dict) -> None:
    """RUN/models/NAME: adapter weights and config, tokenizer with its chat template, and what made them."""
    if s.accelerator.is_main_process:
        with atomic_dir(s.rundir.model_dir(name)) as tmp:
            s.model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            if not (tmp / "chat_template.jinja").exists():
                (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
            atomic_write_json(
                tmp / "qatune.json",
                {
                    "qatune_version": __version__,
                    "base_model": config.model,
                    **extra,
                    "input_hash": key,
                    "train_config": config.train.model_dump(mode="json"),
                    "data_sha256": manifest.data_hashes(s.rundir),
                },
            )
    s.accelerator.wait_for_everyone()
