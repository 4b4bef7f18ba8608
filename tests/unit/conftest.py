"""Fixtures shared by the unit tests beyond the tiny models of tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def scored_run(tmp_path_factory, lively_model_dir) -> Path:
    """A run whose eval sets were written by the real eval stage (see report_fakes.build_scored); copy from it."""
    from report_fakes import build_scored

    return build_scored(tmp_path_factory.mktemp("scored") / "run", lively_model_dir)
