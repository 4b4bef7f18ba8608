"""Checkpoints: an exact round trip of weights, optimizer, scheduler and RNG states; safetensors + JSON only;
a failed write (full disk) leaves the previous checkpoint intact; half-built folders are ignored."""

from __future__ import annotations

import errno
import hashlib
import random

import numpy as np
import pytest
import torch

from qatune.train import checkpoint


def _objects(seed=0):
    torch.manual_seed(seed)
    params = {
        "a.lora_A.weight": torch.nn.Parameter(torch.randn(4, 8)),
        "a.lora_B.weight": torch.nn.Parameter(torch.randn(8, 4)),
    }
    opt = torch.optim.AdamW(list(params.values()), lr=1e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 3))
    return params, opt, sched


def _train(params, opt, sched, steps=3):
    for _ in range(steps):
        loss = sum((p**2).sum() for p in params.values())
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_round_trip_restores_everything_exactly(tmp_path):
    params, opt, sched = _objects()
    _train(params, opt, sched)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = checkpoint.save(tmp_path, {"epoch": 2, "step_in_epoch": 1}, params, opt, sched)
    lr_at_save = opt.param_groups[0]["lr"]
    expected_next = (random.random(), np.random.rand(), torch.rand(3))
    _train(params, opt, sched, steps=2)
    reference = {k: p.detach().clone() for k, p in params.items()}

    params2, opt2, sched2 = _objects(seed=1)  # different starting values everywhere
    random.seed(0)
    progress = checkpoint.restore(path, params2, opt2, sched2)
    assert progress == {"epoch": 2, "step_in_epoch": 1}
    assert (random.random(), np.random.rand()) == expected_next[:2]
    assert torch.equal(torch.rand(3), expected_next[2])
    assert sched2.last_epoch == 3 and opt2.param_groups[0]["lr"] == lr_at_save
    _train(params2, opt2, sched2, steps=2)
    for key in reference:
        assert torch.equal(params2[key], reference[key]), key
    assert sched2.last_epoch == sched.last_epoch


def test_only_safetensors_and_json_are_written(tmp_path):
    params, opt, sched = _objects()
    _train(params, opt, sched)
    path = checkpoint.save(tmp_path, {"epoch": 1}, params, opt, sched)
    assert {p.suffix for p in path.iterdir()} == {".json", ".safetensors"}


def test_new_checkpoint_replaces_the_previous_one_only_when_complete(tmp_path):
    params, opt, sched = _objects()
    first = checkpoint.save(tmp_path, {"n": 1}, params, opt, sched)
    second = checkpoint.save(tmp_path, {"n": 2}, params, opt, sched)
    assert checkpoint.list_checkpoints(tmp_path) == [second] and not first.exists()
    assert checkpoint.read_progress(checkpoint.latest(tmp_path)) == {"n": 2}


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    params, opt, sched = _objects()
    first = checkpoint.save(tmp_path, {"n": 1}, params, opt, sched)
    before = _digest(first)
    calls = {"n": 0}
    real = checkpoint._save_tensors

    def disk_full(path, tensors):
        calls["n"] += 1
        if calls["n"] == 2:  # fail halfway through the new checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, tensors)

    monkeypatch.setattr(checkpoint, "_save_tensors", disk_full)
    _train(params, opt, sched)
    with pytest.raises(OSError) as err:
        checkpoint.save(tmp_path, {"n": 2}, params, opt, sched)
    assert err.value.errno == errno.ENOSPC
    assert checkpoint.list_checkpoints(tmp_path) == [first]
    assert _digest(first) == before
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # the half-built folder is gone


def test_half_built_or_foreign_folders_are_ignored(tmp_path):
    params, opt, sched = _objects()
    good = checkpoint.save(tmp_path, {"n": 1}, params, opt, sched)
    (tmp_path / ".ckpt-000002.x.tmp").mkdir()
    (tmp_path / "ckpt-000003").mkdir()  # no state.json: not complete
    (tmp_path / "notes").mkdir()
    assert checkpoint.latest(tmp_path) == good


def test_unreadable_or_other_format_checkpoints_are_clear_errors(tmp_path):
    from qatune.console import QatuneError

    bad = tmp_path / "ckpt-000001"
    bad.mkdir()
    (bad / "state.json").write_text("{not json")
    with pytest.raises(QatuneError, match="unreadable checkpoint"):
        checkpoint.read_progress(bad)
    (bad / "state.json").write_text('{"format": 99, "progress": {}}')
    with pytest.raises(QatuneError, match="another qatune version"):
        checkpoint.read_progress(bad)
