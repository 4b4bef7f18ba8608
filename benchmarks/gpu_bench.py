"""GPU benchmark on one CUDA GPU, Mistral-7B shape with random weights (throughput does not depend on weight
values): the seed's QLoRA recipe vs qatune's training path (qatune.models load_base and attach_lora,
qatune.train.batching planning and collation, qatune.train.loss.AnswerLoss, Liger kernels and FlexAttention when
present) in QLoRA and LoRA-bf16 mode, and the seed's beam-5 one-at-a-time generation vs qatune.generate.Engine.

    PYTHONPATH=src python3 benchmarks/gpu_bench.py            # CUDA: under 10 minutes on an H200
    .venv/bin/python benchmarks/gpu_bench.py --tiny           # CPU dry run of every code path, tiny model

Sequence lengths are the seed's (159 pairs in an [INST] template, mean ~34 tokens) or 128-512 tokens ("long").
MFU counts 4N FLOPs per useful token against --peak-tflops (790: the measured H200 bf16 matrix rate).
Writes $OUT/gpu_bench.json (or --out) after every variant; one failing variant does not stop the others.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]
from gpu_data import LENS, PROMPT, build_model_dir, examples, question_text, seed_batches  # noqa: E402

from qatune.generate import Engine  # noqa: E402
from qatune.models.load import load_base, load_tokenizer  # noqa: E402
from qatune.models.lora import attach_lora, lora_config  # noqa: E402
from qatune.models.placement import Placement  # noqa: E402
from qatune.prompts import messages_for  # noqa: E402
from qatune.train.batching import auto_batch_size, collate, plan_batches, to_device  # noqa: E402
from qatune.train.loss import AnswerLoss  # noqa: E402

GOALS = {"qlora_vs_seed": 25.0, "lora_long_mfu": 0.55, "eval_vs_seed": 100.0}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.a, self.t0, self.results = args, time.monotonic(), []
        self.dev = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
        self.path, self.n_params = build_model_dir(args.tiny, self.dev, Path(args.model_dir))
        self.liger = self.dev == "cuda" and _has("liger_kernel") and not args.no_liger
        self.flex = self.dev == "cuda" and _has("torch.nn.attention.flex_attention") and not args.no_flex
        self.quant = self.dev == "cuda" and _has("bitsandbytes")
        v = 32000
        self.short = examples(v, 200 if args.tiny else 6000)
        self.long = examples(v, 40 if args.tiny else 3000, long=True)
        self.out = Path(args.out) / "gpu_bench.json"
        self.env = {
            "device": torch.cuda.get_device_name(0) if self.dev == "cuda" else "cpu",
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "peft": _version("peft"),
            "bitsandbytes": _version("bitsandbytes"),
            "liger_kernel": _version("liger_kernel"),
            "flex_attention": self.flex,
            "n_params": self.n_params,
            "peak_tflops": args.peak_tflops,
            "mean_short_len": round(sum(LENS) / len(LENS), 1),
            "mean_short_prompt": round(sum(PROMPT) / len(PROMPT), 1),
        }
        self.log({"event": "ready", **self.env})

    def log(self, row: dict) -> None:
        row = {"t": round(time.monotonic() - self.t0, 1), **row}
        print(json.dumps(row), flush=True)
        if "variant" in row:
            self.results.append(row)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({"env": self.env, "results": self.results}, indent=1))

    def time_left(self) -> float:
        return self.a.budget_s - (time.monotonic() - self.t0)

    def sync(self) -> None:
        if self.dev == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.dev == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.dev == "cuda" else 0.0

    def free(self) -> None:
        gc.collect()
        if self.dev == "cuda":
            torch.cuda.empty_cache()

    def tokenizer(self):
        return load_tokenizer(str(self.path))

    # ---------------------------------------------------------------- the seed's recipe
    def seed_phase(self) -> None:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from seed_recipe import seed_generate
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        kw: dict = {"dtype": torch.float16 if self.dev == "cuda" else torch.float32}
        if self.quant:
            kw.update(
                device_map={"": 0},
                quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=torch.float16,
                ),
            )
        start = time.monotonic()
        model = AutoModelForCausalLM.from_pretrained(str(self.path), **kw)
        if not self.quant:
            model.to(self.dev)
        model.config.use_cache = False
        if self.quant:
            model = prepare_model_for_kbit_training(model)  # gradient checkpointing on, as the seed had
        else:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        model = get_peft_model(
            model,
            LoraConfig(
                r=8,
                lora_alpha=16,
                lora_dropout=0.1,
                bias="none",
                target_modules=["q_proj", "v_proj"],
                task_type="CAUSAL_LM",
            ),
        )
        self.log(
            {
                "event": "loaded",
                "what": "seed 4-bit fp16" if self.quant else "seed fp32",
                "s": round(time.monotonic() - start, 1),
            }
        )
        self.seed_train(model)
        model.eval()
        model.config.use_cache = True  # the seed's eval loaded the model afresh: cache on
        questions = [question_text(e) for e in self.short[: self.a.seed_questions]]
        seed_generate(model, self.tokenizer(), questions[:1], max_length=40)  # warm-up, untimed
        self.reset_peak()
        out = seed_generate(model, self.tokenizer(), questions, max_length=self.a.seed_max_length)
        self.log(
            {
                "variant": "seed_gen_beam5_bs1_maxlen200",
                "questions": len(questions),
                "seconds": round(out["seconds"], 2),
                "new_tokens": out["new_tokens"],
                "q_per_s": round(out["questions_per_s"], 4),
                "peak_gib": self.peak_gib(),
            }
        )
        del model
        self.free()

    def seed_train(self, model) -> None:
        """Trainer-equivalent loop: pad to 256, labels on every token, batch 2 x accumulation 2, fp16 AMP."""
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
        amp = self.dev == "cuda"
        scaler = torch.amp.GradScaler("cuda") if amp else None
        batches = seed_batches([e.input_ids for e in self.short], 2, 256)
        model.train()
        warm, steps = (1, 1) if self.a.tiny else (2, self.a.seed_steps)
        tokens, loss, start = 0, torch.zeros(()), 0.0
        for step in range(warm + steps):
            if step == warm:
                self.reset_peak()
                start, tokens = time.perf_counter(), 0
            for _ in range(2):
                ids, mask, useful = next(batches)
                ids, mask = ids.to(self.dev), mask.to(self.dev)
                with torch.autocast(self.dev, dtype=torch.float16, enabled=amp):
                    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss / 2
                (scaler.scale(loss) if scaler else loss).backward()
                tokens += useful
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
        self.sync()
        self.report("seed_qlora_pad256_bs2x2_fp16_gc", tokens, time.perf_counter() - start, loss.item() * 2, steps)

    def report(self, name: str, tokens: int, seconds: float, loss: float, steps: int, **extra) -> dict:
        tps = tokens / seconds
        mfu = tps * 4 * self.n_params / (self.a.peak_tflops * 1e12)
        row = {
            "variant": name,
            "steps": steps,
            "seconds": round(seconds, 3),
            "useful_tokens": tokens,
            "useful_tok_per_s": round(tps, 1),
            "mfu_4N": round(mfu, 4),
            "peak_gib": self.peak_gib(),
            "loss": round(loss, 3),
            **extra,
        }
        self.log(row)
        return row

    # ---------------------------------------------------------------- qatune
    def qatune_phase(self, label: str, quant: bool, plan: list[tuple | int]) -> None:
        """Load the base as qatune.train.setup does (load_base for training, use_cache off, Liger on the instance, LoRA
        r8/alpha16/dropout 0.1 on q/v, AnswerLoss with fused cross-entropy under Liger), then run the plan in
        order, most important first: a tuple is a training variant, an int an eval batch size."""
        mode = "4bit" if quant and self.quant else "none"
        precision = "bf16" if self.dev == "cuda" else "fp32"
        start = time.monotonic()
        base = load_base(
            str(self.path),
            Placement(self.dev, mode, precision, "benchmark"),
            for_training=True,
            attn_implementation="sdpa",
        )
        base.config.use_cache = False
        if self.liger:
            from liger_kernel.transformers import _apply_liger_kernel_to_instance

            _apply_liger_kernel_to_instance(model=base, fused_linear_cross_entropy=False, cross_entropy=False)
        model = attach_lora(base, lora_config(8, 16, self.a.lora_dropout, ["q_proj", "v_proj"]))
        loss = AnswerLoss(model, fused_ce=self.liger)
        self.log(
            {
                "event": "loaded",
                "what": f"qatune quant={mode} {precision}",
                "liger": self.liger,
                "s": round(time.monotonic() - start, 1),
            }
        )
        for item in plan:
            if isinstance(item, int):
                if self.time_left() < 60:
                    self.log({"event": "skipped", "what": f"{label} eval batch {item}", "reason": "time budget"})
                    continue
                base.set_attn_implementation("sdpa")
                self.guarded(lambda bs=item, m=model: self.qatune_eval(m, label, bs))
            else:
                name, data, packed, tokens, fixed_bs, flex = item
                self.qatune_variant(base, loss, name, data, packed, tokens, fixed_bs, flex and self.flex)
        del loss, model, base
        self.free()

    def qatune_variant(
        self, base, loss, name: str, data: str, packed: bool, tokens: int, fixed_bs: int | None, flex: bool
    ) -> None:
        """One training variant; FlexAttention falls back to SDPA on error, out of memory halves the batch."""
        attn = "flex_attention" if flex else "sdpa"
        for _ in range(3):
            if self.time_left() < 60:
                self.log({"event": "skipped", "what": name, "reason": "time budget"})
                return
            try:
                base.set_attn_implementation(attn)
                self.qatune_train(f"{name}_{attn}", loss, data, packed, tokens, fixed_bs)
                return
            except torch.cuda.OutOfMemoryError:
                self.log({"event": "oom", "what": name, "tokens": tokens})
                tokens, fixed_bs = tokens // 2, fixed_bs // 2 if fixed_bs else None
            except Exception:
                traceback.print_exc()
                if attn == "sdpa":
                    return
                attn = "sdpa"
            finally:
                loss.zero_grad(set_to_none=True)
                self.free()

    def qatune_train(self, name: str, loss_module, data: str, packed: bool, tokens: int, fixed_bs: int | None) -> None:
        """Mirrors qatune.train.loop.train_step: loss = summed answer-token cross-entropy / the step's answer tokens,
        batches from qatune.train.batching (auto_batch_size over a token budget, plan_batches, collate)."""
        ex = self.short if data == "short" else self.long
        lengths = [len(e.input_ids) for e in ex]
        bs = fixed_bs or auto_batch_size(lengths, tokens, n_min_steps=1)
        params = [p for p in loss_module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
        amp = self.dev == "cuda"
        loss_module.train()

        def micro():
            for epoch in range(1, 1000):
                for idx in plan_batches(lengths, 42, epoch, bs, grouped=not packed):
                    chosen = [ex[i] for i in idx]
                    yield to_device(collate(chosen, 5, 0, packed), self.dev), chosen

        it = micro()
        warm, steps = (1, 1) if self.a.tiny else (3, self.a.steps)
        done, loss_value, start = 0, 0.0, 0.0
        for step in range(warm + steps):
            if step == warm:
                self.reset_peak()
                start, done = time.perf_counter(), 0
            batch, chosen = next(it)
            targets = sum(e.answer_tokens for e in chosen)
            with torch.autocast(self.dev, dtype=torch.bfloat16, enabled=amp):
                loss_sum, _ = loss_module(**batch)
            (loss_sum / targets).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += sum(len(e.input_ids) for e in chosen)
            loss_value = loss_sum.item() / targets
        self.sync()
        self.report(
            name, done, time.perf_counter() - start, loss_value, steps, examples_per_micro_batch=bs, packed=packed
        )

    def qatune_eval(self, model, label: str, batch_size: int) -> None:
        names = list(getattr(model, "peft_config", {}) or {})
        engine = Engine(model, self.tokenizer(), names[:1], self.dev)
        name = names[0] if names else "base"
        convs = [messages_for(question_text(e)) for e in self.short[100 : 100 + self.a.questions]]
        engine.generate(name, convs[:2], max_new_tokens=4, batch_size=2)  # warm-up, untimed
        self.reset_peak()
        start = time.perf_counter()
        gens = engine.generate(name, convs, max_new_tokens=self.a.max_new_tokens, batch_size=batch_size)
        self.sync()
        seconds = time.perf_counter() - start
        new = sum(g.new_tokens for g in gens)
        self.log(
            {
                "variant": f"qatune_gen_greedy_{label}_bs{batch_size}_new{self.a.max_new_tokens}",
                "questions": len(convs),
                "seconds": round(seconds, 2),
                "new_tokens": new,
                "q_per_s": round(len(convs) / seconds, 3),
                "tok_per_s": round(new / seconds, 1),
                "stop_rate": round(sum(g.stopped for g in gens) / len(gens), 3),
                "peak_gib": self.peak_gib(),
            }
        )

    def guarded(self, fn) -> None:
        try:
            fn()
        except Exception:
            traceback.print_exc()
            sys.stdout.flush()
        self.free()

    def run(self) -> None:
        only = set(filter(None, self.a.only.split(",")))
        tiny = self.a.tiny
        budget = 256 if tiny else 16384  # qatune.train.setup.GPU_TOKEN_BUDGET: tokens per micro-batch on CUDA
        short_row, long_row = (128, 512) if tiny else (4096, 8192)
        # (name, data, packed, tokens per micro-batch, fixed batch size, FlexAttention when available)
        ev = (lambda *bs: [4]) if tiny else (lambda *bs: list(bs))  # noqa: E731
        # (name, data, packed, tokens per micro-batch, fixed batch size, FlexAttention when available) or an
        # eval batch size; qatune's product default on CUDA first, then the goal's variant, then the rest
        qlora = [
            ("qlora_dynpad_short_auto", "short", False, budget, None, False),
            (f"qlora_packed{short_row}_short", "short", True, short_row, None, True),
            *ev(128, 64),
            ("qlora_dynpad_short_bs15", "short", False, budget, 15, False),
        ]
        lora = [
            (f"lora_packed{long_row}_long", "long", True, long_row, None, True),
            ("lora_dynpad_long_auto", "long", False, budget, None, False),
            *ev(128),
            (f"lora_packed{short_row}_short", "short", True, short_row, None, True),
            ("lora_dynpad_short_auto", "short", False, budget, None, False),
        ]
        phases = {
            "seed": self.seed_phase,
            "qlora": lambda: self.qatune_phase("qlora", True, qlora),
            "lora": lambda: self.qatune_phase("bf16", False, lora),
        }
        for name, fn in phases.items():
            if not only or name in only:
                self.guarded(fn)
        self.summary()

    def best(self, match, key: str) -> float | None:
        return max((r[key] for r in self.results if match(r["variant"]) and key in r), default=None)

    def summary(self) -> None:
        by = {r["variant"]: r for r in self.results}
        seed = by.get("seed_qlora_pad256_bs2x2_fp16_gc", {}).get("useful_tok_per_s")
        seed_q = by.get("seed_gen_beam5_bs1_maxlen200", {}).get("q_per_s")
        print(f"\n{'variant':<46} {'tok/s':>10} {'MFU':>6} {'GiB':>7} {'q/s':>8} {'vs seed':>8}")
        for r in self.results:
            tps, qps = r.get("useful_tok_per_s"), r.get("q_per_s")
            ratio = tps / seed if tps and seed else qps / seed_q if qps and seed_q else None
            print(
                f"{r['variant']:<46} {tps or '':>10} {r.get('mfu_4N', ''):>6} {r.get('peak_gib', ''):>7} "
                f"{qps or '':>8} {f'{ratio:.1f}x' if ratio else '':>8}"
            )

        def ratio(value: float | None, ref: float | None) -> float | None:
            return value / ref if value and ref else None

        default_qlora = self.best(lambda v: v.startswith("qlora_dynpad_short_auto"), "useful_tok_per_s")
        default_gen = self.best(lambda v: v.startswith("qatune_gen_greedy_qlora_bs64"), "q_per_s")
        verdicts = {  # (figure, goal key): product defaults on CUDA, then the best variant measured
            "qlora_vs_seed, default (length-grouped padding)": (ratio(default_qlora, seed), "qlora_vs_seed"),
            "qlora_vs_seed, best variant": (
                ratio(self.best(lambda v: v.startswith("qlora_"), "useful_tok_per_s"), seed),
                "qlora_vs_seed",
            ),
            "lora_long_mfu, best variant": (
                self.best(lambda v: v.startswith("lora_") and "_long" in v, "mfu_4N"),
                "lora_long_mfu",
            ),
            "eval_vs_seed, default (4-bit, batch 64)": (ratio(default_gen, seed_q), "eval_vs_seed"),
            "eval_vs_seed, best variant": (
                ratio(self.best(lambda v: v.startswith("qatune_gen"), "q_per_s"), seed_q),
                "eval_vs_seed",
            ),
        }
        if self.a.tiny:
            print("dry run (--tiny, CPU, tiny model): the ratios below only show that every path ran")
        for k, (v, goal) in verdicts.items():
            state = "n/a" if v is None else ("met" if v >= GOALS[goal] else "NOT met")
            print(f"{k}: {v if v is None else round(v, 3)} (goal >= {GOALS[goal]}): {state}")
        verdicts = {k: v for k, (v, _) in verdicts.items()}
        self.env.update(verdicts=verdicts)
        self.log({"event": "done", "verdicts": verdicts})


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: tiny Mistral, no 4-bit, a few steps")
    ap.add_argument("--out", default=os.environ.get("OUT", tempfile.gettempdir()))
    ap.add_argument("--model-dir", help="where the random model is built once (default: in the temp folder)")
    ap.add_argument("--only", default="", help="comma list of phases: seed,qlora,lora")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per qatune variant")
    ap.add_argument("--seed-steps", type=int, default=12)
    ap.add_argument("--seed-questions", type=int, default=4)
    ap.add_argument("--seed-max-length", type=int, default=200)
    ap.add_argument("--questions", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=180, help="about what the seed's max_length 200 leaves")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--budget-s", type=float, default=560.0, help="skip what would not fit in this many seconds")
    ap.add_argument("--lora-dropout", type=float, default=0.1, help="qatune's default 0.1; the anchor's levers used 0")
    ap.add_argument("--no-liger", action="store_true")
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args(argv)
    default_dir = os.path.join(tempfile.gettempdir(), "qatune-gpu-bench-model" + ("-tiny" if args.tiny else ""))
    args.model_dir = args.model_dir or default_dir
    if args.tiny:
        args.questions, args.seed_questions, args.max_new_tokens, args.seed_max_length = 4, 2, 8, 40
    random.seed(0)
    torch.manual_seed(0)
    bench = Bench(args)
    bench.run()
    return bench.results


if __name__ == "__main__":
    main()
