"""An eval killed with SIGKILL between batches resumes from the generations already written: only the
missing model x question pairs are generated, and the scores equal those of an uninterrupted eval."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

from eval_run import make_run, run_config
from qatune.evaluate.answer import evaluate
from qatune.generate import Engine
from qatune.rundir import RunDir
from qatune.storage import read_jsonl

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from qatune import config as cfg, console
    from qatune.evaluate.answer import evaluate
    from qatune.generate import Engine

    calls, original = [], Engine.generate

    def generate(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    Engine.generate = generate
    console.set_quiet(True)
    run = Path(sys.argv[1])
    evaluate(run, cfg.load_for_run(run, None, {}, save=False))
    """
)


def test_kill_9_mid_eval_then_resume(tmp_path, tiny_model_dir, monkeypatch):
    run = make_run(tmp_path / "run", tiny_model_dir, epochs=(1, 2))
    clean_run = shutil.copytree(run, tmp_path / "clean")
    # batch size 4, 6 questions: base = calls 1-2, epoch-1 = 3-4; killed as the 4th batch starts
    proc = subprocess.run([sys.executable, "-c", KILLER, str(run), "4"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    saved = read_jsonl(RunDir(run).eval_generations("test"))
    assert [r["model"] for r in saved] == ["retrieval"] * 6 + ["base"] * 6 + ["epoch-1"] * 4
    assert not RunDir(run).eval_scores("test").exists()

    asked: list[tuple[str, int]] = []
    original = Engine.generate

    def counting(self, name, conversations, **kwargs):
        asked.append((name, len(conversations)))
        return original(self, name, conversations, **kwargs)

    monkeypatch.setattr(Engine, "generate", counting)
    resumed = evaluate(run, run_config(run))
    assert asked == [("epoch-1", 2), ("epoch-2", 4), ("epoch-2", 2)]
    clean = evaluate(clean_run, run_config(clean_run))
    for model, table in clean["models"].items():
        for metric, stat in table.items():
            assert abs(resumed["models"][model][metric]["mean"] - stat["mean"]) < 1e-6, (model, metric)
    assert resumed["comparisons"].keys() == clean["comparisons"].keys()
    assert len(read_jsonl(RunDir(run).eval_generations("test"))) == 4 * 6
