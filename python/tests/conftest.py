"""Shared fixtures: the built `nuq` binary (ctest passes NUQ_BINARY), a runner of it, and seeded generators."""

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest


@pytest.fixture
def nuq_binary() -> str:
    path = os.environ.get("NUQ_BINARY")
    if path is None:  # run by hand: the default build folder, then PATH
        candidate = pathlib.Path(__file__).resolve().parents[2] / "build" / "nuq"
        path = str(candidate) if candidate.exists() else shutil.which("nuq")
    if path is None or not os.path.exists(path):
        pytest.fail("the nuq binary was not found: set NUQ_BINARY (ctest does) or build into build/")
    return path


@pytest.fixture
def nuq_cli(nuq_binary):
    """Runs `nuq ARGS...` and returns its standard output; a failure fails the test with its output."""
    def run(*args) -> str:
        result = subprocess.run([nuq_binary, *(str(a) for a in args)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout
    return run


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20)
