"""Shared settings and builders for the DepthFormer (Table 9) tests."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmdysample  # noqa: F401  (registers the DepthFormer modules and the upsamplers)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEPTH_CONFIGS = osp.join(REPO_ROOT, 'configs', 'depth')
DEMO_CONFIGS = osp.join(REPO_ROOT, 'configs', 'demo')
#: DepthFormer-SwinT's five levels, the stem's first
LEVEL_CHANNELS = [64, 96, 192, 384, 768]


def depth_config(row: str) -> Config:
    return Config.fromfile(osp.join(DEPTH_CONFIGS, f'depthformer_swin-t-w7_{row}_nyu-416x544.py'))


def demo_config(upsampler: str = 'bilinear') -> Config:
    return Config.fromfile(
        osp.join(DEMO_CONFIGS, f'depthformer_swin-w16_{upsampler}_demo_synthetic-nyu.py'))


def build_model(cfg):
    """Build in mmseg's scope (also from module-scoped fixtures, which run before the
    function-scoped ``mmseg_default_scope``)."""
    from mmseg.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg)


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def depth_test_settings(one_intra_op_thread, mmseg_default_scope):
    """One intra-op thread and mmseg's default scope (tests/conftest.py)."""
    yield

