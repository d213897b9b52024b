"""RandomStateHook with mmengine's real Runner: a resumed run ends with the weights of the
uninterrupted run, bit for bit, also when ``randomness.seed`` is unset (stock configs)."""
import numpy as np
import pytest
import torch

from engine_training import state_dict, tiny_config, train
from mmdysample.engine import (RandomStateHook, capture_random_states, configure_resume,
                               restore_random_states)


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize('through', ['configure_resume', 'mmengine_resume'])
def test_resume_with_unset_seed_equals_uninterrupted_run(tmp_path, through):
    """4 iterations with ``randomness.seed=None`` (checkpoints at 2 and 4) vs. a new run in
    another work dir resumed from iter_2: iter_4 weights bit-identical.

    ``mmengine_resume`` is the path of mmengine's own tools (``resume=True`` and
    ``load_from``): Runner.resume re-seeds after the checkpoint hooks, which undid the old
    hook's restore. Its sampler gets a new seed there (see ``configure_resume``), so that
    path is run without shuffling."""
    straight_cfg = tiny_config(tmp_path / 'straight', max_iters=4, interval=2)
    resumed_cfg = tiny_config(tmp_path / 'resumed', max_iters=4, interval=2)
    if through == 'mmengine_resume':
        for cfg in (straight_cfg, resumed_cfg):
            cfg.train_dataloader.sampler.shuffle = False
    train(straight_cfg)
    checkpoint = str(tmp_path / 'straight' / 'iter_2.pth')
    if through == 'configure_resume':
        assert configure_resume(resumed_cfg, checkpoint) == checkpoint
    else:
        resumed_cfg.resume, resumed_cfg.load_from = True, checkpoint
    train(resumed_cfg)

    final = state_dict(tmp_path / 'straight' / 'iter_4.pth')
    _assert_same_weights(state_dict(tmp_path / 'resumed' / 'iter_4.pth'), final)
    # not vacuous: iterations 3-4 changed the weights, and without the states they differ
    middle = state_dict(checkpoint)
    assert any(not torch.equal(final[key], middle[key]) for key in final)
    without_hook = tiny_config(tmp_path / 'without_hook', max_iters=4, interval=2)
    without_hook.custom_hooks = []
    without_hook.train_dataloader.sampler.shuffle = resumed_cfg.train_dataloader.sampler.shuffle
    configure_resume(without_hook, checkpoint)
    train(without_hook)
    other = state_dict(tmp_path / 'without_hook' / 'iter_4.pth')
    assert any(not torch.equal(final[key], other[key]) for key in final)


def test_checkpoint_holds_states_per_rank_and_they_restore():
    torch.manual_seed(3)
    np.random.seed(3)
    states = capture_random_states()
    expected = (torch.rand(4), np.random.rand(4))
    torch.manual_seed(4)
    np.random.seed(4)
    restore_random_states(states)
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])

    hook = RandomStateHook()
    hook.after_train_iter(None, 0)
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    assert isinstance(checkpoint['rng_states'], list) and len(checkpoint['rng_states']) == 1
    assert torch.equal(checkpoint['rng_states'][0]['torch'], torch.get_rng_state())
