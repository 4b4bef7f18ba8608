"""The course project's recipe, reimplemented faithfully as the baseline the benchmarks compare against.

Training: HF Trainer, `<s>[INST] {q} [/INST] {a}` prompt, every example padded to 256 tokens, labels on
every token (prompt and padding), pad = EOS, LoRA r=8/alpha=16/dropout 0.1 on q_proj+v_proj, AdamW lr 2e-4,
weight decay 0.01, batch 2 x gradient accumulation 2, gradient checkpointing (what
prepare_model_for_kbit_training turns on), fp32 on CPU (bitsandbytes 4-bit is CUDA-only).
Generation: one question at a time, beam search with 5 beams, max_length 200 including the prompt.
"""

from __future__ import annotations

import time
from pathlib import Path

SEED_PROMPT = "<s>[INST] {q} [/INST] {a}"
SEED_PAD_TO = 256


def seed_tokenize(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    tokenizer.pad_token = tokenizer.eos_token
    rows = []
    for q, a in pairs:
        enc = tokenizer(SEED_PROMPT.format(q=q, a=a), truncation=True, max_length=SEED_PAD_TO, padding="max_length")
        rows.append(
            {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": list(enc["input_ids"])}
        )
    return rows


def seed_train(model_path: str, pairs: list[tuple[str, str]], epochs: int, out_dir: Path) -> dict:
    """Train with the seed recipe; returns examples/s and useful (non-pad) tokens/s of the training loop."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    model = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    rows = seed_tokenize(tokenizer, pairs)
    useful = sum(sum(r["attention_mask"]) for r in rows) * epochs

    class _Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> dict:
            return {k: torch.tensor(v) for k, v in rows[i].items()}

    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=2e-4,
        weight_decay=0.01,
        num_train_epochs=epochs,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=42,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Rows())
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "examples_per_s": len(rows) * epochs / seconds,
        "useful_tokens_per_s": useful / seconds,
        "final_loss": result.training_loss,
    }


def seed_generate(model, tokenizer, questions: list[str], max_length: int = 200) -> dict:
    """One question at a time, 5-beam search to max_length 200 including the prompt (the seed's eval)."""
    import torch

    tokenizer.pad_token = tokenizer.eos_token
    start = time.perf_counter()
    new_tokens = 0
    answers = []
    with torch.inference_mode():
        for q in questions:
            ids = tokenizer(f"<s>[INST] {q} [/INST]", return_tensors="pt").to(model.device)
            out = model.generate(
                **ids, max_length=max_length, num_beams=5, early_stopping=True, pad_token_id=tokenizer.eos_token_id
            )
            new_tokens += out.shape[1] - ids["input_ids"].shape[1]
            answers.append(tokenizer.decode(out[0], skip_special_tokens=True))  # prompt echo included
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "questions_per_s": len(questions) / seconds,
        "new_tokens": new_tokens,
        "answers": answers,
    }
