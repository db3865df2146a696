"""Scoped backend flags: set inside the block, the caller's settings restored after it."""
import pytest
import torch

from portraitrig.accel.backends import fast_backends


def _flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


def test_flags_are_scoped_and_restored_after_errors():
    old = _flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        with fast_backends():
            assert _flags() == (True, True, True)
        assert _flags() == (False, False, False)
        with pytest.raises(RuntimeError):
            with fast_backends(tf32=False):
                assert _flags() == (False, False, True)
                raise RuntimeError("boom")
        assert _flags() == (False, False, False)
        with fast_backends(enabled=False):
            assert _flags() == (False, False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = old


def test_a_training_run_leaves_global_flags_alone(tmp_path):
    """Library calls never change the caller's backend settings (training scopes them)."""
    from synth_data import _cfg, _synthetic, train
    from portraitrig.neural.cache import build_cache

    imgs, p = _synthetic()
    cache = build_cache(imgs, p, [f"i{i}" for i in range(len(imgs))], 32)
    old = _flags()
    train(cache, tmp_path / "r", _cfg(steps=1))
    assert _flags() == old
