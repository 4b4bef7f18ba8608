"""The model card's section on grounded answers: how to use the retrieval index an export carries (its
files and the grounded user turn) without qatune."""

from __future__ import annotations

from pathlib import Path

from qatune.rag.index import PAIRS_FILE, VECTORS_FILE, saved_k


def grounded_usage(folder: str, index_dir: Path, head: int = 0) -> str:
    """How to ask the exported model grounded: the index is copied to `index/` next to the weights; `head`: the
    tokens a retrieved answer is cut to in the prompt, as grounded training cut it (0: whole)."""
    k = saved_k(index_dir)
    cut = (
        f" A retrieved answer longer than {head} tokens (the model's tokenizer) goes in as its first {head} tokens "
        "and ` ...`, as the model was trained."
        if head
        else ""
    )
    return f"""## Grounded answers (retrieved context)

The model was also trained to answer with retrieved training pairs in its prompt; `index/` holds them
(`{PAIRS_FILE}`) with their all-MiniLM-L6-v2 embeddings (`{VECTORS_FILE}`, unit length: `vectors` for each
pair's question, `pair_vectors` for its question and answer read together). Embed the question, score each pair by
the larger of its two dot products, take the top {k} pairs and put them in the user turn:

```python
import json
import numpy as np
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer

pairs = [json.loads(line) for line in open("{folder}/index/{PAIRS_FILE}")]
index = load_file("{folder}/index/{VECTORS_FILE}")
embedder = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
question = "Your question"
asked = embedder.encode([question], normalize_embeddings=True)[0]
scores = np.maximum(index["vectors"] @ asked, index.get("pair_vectors", index["vectors"]) @ asked)
top = (-scores).argsort(kind="stable")[:{k}]
refs = "\\n".join(f"Q: {{pairs[i]['question']}}\\nA: {{pairs[i]['answer']}}" for i in top)
messages = [{{"role": "user", "content": f"Reference Q&A:\\n{{refs}}\\n\\nQuestion: {{question}}"}}]
```
then generate as above.{cut} Without the context it answers closed-book, from what it learned.
"""
