"""Answers from a run's models: engine.py (one base, many adapters), decoding.py (batched greedy decoding for
eval), batch.py (continuous batching for serve and chat), streaming.py (text as tokens arrive), budget.py (answer
budgets), select.py (grounded answers chosen among the retrieved ones on long answers) and vllm.py (the optional
vLLM backend, imported only when asked for)."""

from qatune.generate.engine import BASE, Engine, Generation, auto_batch_size, load_engine

__all__ = ["BASE", "Engine", "Generation", "auto_batch_size", "load_engine"]
