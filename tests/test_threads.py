"""One place decides torch's thread count: the explicit setting, else OMP_NUM_THREADS, else this process's
cores shared among the node's ranks."""

import os

import pytest

from metta_lightning.threads import configure_torch_threads, default_torch_threads


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("METTA_TORCH_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_default_is_the_cores_this_process_may_use(clean_env):
    cores = len(os.sched_getaffinity(0))
    assert default_torch_threads() == cores
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_torch_threads() == max(1, cores // 2)
    clean_env.setenv("LOCAL_WORLD_SIZE", str(cores * 4))
    assert default_torch_threads() == 1


def test_explicit_settings_win(clean_env):
    clean_env.setenv("OMP_NUM_THREADS", "1")
    assert default_torch_threads() is None  # torch follows OMP_NUM_THREADS itself
    clean_env.setenv("METTA_TORCH_THREADS", "3")
    assert default_torch_threads() == 3
    for bad in ("0", "many"):
        clean_env.setenv("METTA_TORCH_THREADS", bad)
        with pytest.raises(ValueError, match=f"METTA_TORCH_THREADS='{bad}': expected a positive integer"):
            default_torch_threads()


def test_configure_applies_it(clean_env):
    import torch

    before = torch.get_num_threads()
    try:
        clean_env.setenv("METTA_TORCH_THREADS", "1")
        assert configure_torch_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
