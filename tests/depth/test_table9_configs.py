"""Every Table 9 config builds DepthFormer-SwinT with the paper's parameter counts.

The full model (47.6M) is built once; the rows differ in ``decode_head.upsample_cfg`` only
(checked), so each row's delta is the parameter count of its four stage upsamplers, built as
the head builds them; two heads and one full model of learned rows confirm that
head/total = bilinear + delta.
"""
import glob
import os.path as osp

import pytest
import yaml
from mmseg.registry import MODELS

from mmdysample.upsamplers import build_upsampler

from .conftest import DEPTH_CONFIGS, LEVEL_CHANNELS, build_model, depth_config, num_params

#: channels of the feature each fusion stage upsamples, finest stage first
STAGE_CHANNELS = LEVEL_CHANNELS[1:]  # 96, 192, 384, 768
GUIDE_CHANNELS = LEVEL_CHANNELS[:-1]  # 64, 96, 192, 384 (the skip features)

#: DepthFormer-SwinT with the bilinear head: Swin-T + stem 27,530,234; HAHI 12,392,834;
#: head 7,688,961
BILINEAR_TOTAL = 47_612_029


def weights(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() > 1)


# row: (type, exact added parameters, exact added weights (dim > 1), the paper's figure,
#       which count the paper's figure rounds)
ROWS = {
    'deconv': ('Deconv', sum(9 * c * c + c for c in STAGE_CHANNELS),
               sum(9 * c * c for c in STAGE_CHANNELS), '+7.1M', 'total'),
    'pixelshuffle': ('PixelShuffle', sum(9 * c * 4 * c + 4 * c for c in STAGE_CHANNELS),
                     sum(36 * c * c for c in STAGE_CHANNELS), '+28.2M', 'total'),
    # compressor 1x1 C -> 64, encoder 3x3 64 -> (2 * 5)^2
    'carafe': ('CARAFE', sum(64 * c + 64 + 9 * 64 * 100 + 100 for c in STAGE_CHANNELS),
               sum(64 * c + 9 * 64 * 100 for c in STAGE_CHANNELS), '+0.3M', 'total'),
    'indexnet': ('IndexNet', 6_333_056, 6_330_112, '+6.3M', 'total'),
    'a2u': ('A2U', 31_064, 27_968, '+30.0K', None),
    'fade': ('FADE', 197_220, 196_864, '+0.2M', 'total'),
    'sapa-b': ('SAPA-B', 74_240, 69_632, '+0.1M', 'total'),
    # PL style: C/4 -> 2 * 8 offsets (+ as many scope weights for S+, no scope bias)
    'dysample-s': ('DySample-S', sum(c // 4 * 16 + 16 for c in STAGE_CHANNELS),
                   sum(c // 4 * 16 for c in STAGE_CHANNELS), '+5.8K', 'weights'),
    'dysample-s-plus': ('DySample-S+', sum(2 * (c // 4 * 16) + 16 for c in STAGE_CHANNELS),
                        sum(2 * (c // 4 * 16) for c in STAGE_CHANNELS), '+11.5K', 'weights'),
    # LP style: C -> 2 * 4 * 2^2 offsets (+ as many scope weights for DySample+)
    'dysample': ('DySample', sum(32 * c + 32 for c in STAGE_CHANNELS),
                 sum(32 * c for c in STAGE_CHANNELS), '+46.1K', 'weights'),
    'dysample-plus': ('DySample+', sum(64 * c + 32 for c in STAGE_CHANNELS),
                      sum(64 * c for c in STAGE_CHANNELS), '+92.2K', 'weights'),
}


def paper_format(count: int, unit: str) -> str:
    """The paper's style in the unit the paper uses for that row: '+0.3M', '+46.1K' (its
    unit choice is not a fixed threshold: SAPA-B's 74K prints as 0.1M, DySample+'s 92K as
    92.2K)."""
    return f'+{count / 1e6:.1f}M' if unit == 'M' else f'+{count / 1e3:.1f}K'


def stage_upsamplers(upsample_cfg):
    """The four layers a row adds, built as the head builds them (finest stage first)."""
    return [build_upsampler(upsample_cfg, c, 2, guide_channels=g)
            for c, g in zip(STAGE_CHANNELS, GUIDE_CHANNELS)]


@pytest.fixture(scope='module')
def bilinear_head():
    return build_model(depth_config('bilinear').model.decode_head)


@pytest.fixture(scope='module')
def bilinear_model():
    return build_model(depth_config('bilinear').model)


def test_every_table9_row_has_a_config():
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(DEPTH_CONFIGS, '*.py')))
    assert names == sorted(f'depthformer_swin-t-w7_{row}_nyu-416x544.py'
                           for row in ['bilinear', *ROWS])


@pytest.mark.slow
def test_bilinear_total_is_the_papers_47_6m(bilinear_model):
    model = bilinear_model
    assert num_params(model) == BILINEAR_TOTAL
    assert f'{BILINEAR_TOTAL / 1e6:.1f}M' == '47.6M'
    assert (num_params(model.backbone), num_params(model.neck),
            num_params(model.decode_head)) == (27_530_234, 12_392_834, 7_688_961)
    assert model.decode_head.upsamplers is None
    # the five levels of the encoder feed the neck and the head
    assert model.backbone.out_channels == model.neck.in_channels == LEVEL_CHANNELS
    assert model.decode_head.in_channels == LEVEL_CHANNELS


@pytest.mark.slow
@pytest.mark.parametrize('row', sorted(ROWS))
def test_row_differs_only_in_upsample_cfg_and_adds_the_papers_delta(row):
    layer_type, added, added_weights, paper, rounded = ROWS[row]
    base, cfg = depth_config('bilinear'), depth_config(row)
    upsample_cfg = cfg.model.decode_head.upsample_cfg
    assert upsample_cfg == dict(type=layer_type)
    for config in (base, cfg):
        config.model.decode_head.upsample_cfg = None
    assert cfg.to_dict() == base.to_dict()

    layers = stage_upsamplers(upsample_cfg)
    added_here = sum(num_params(layer) for layer in layers)
    assert added_here == added
    assert sum(weights(layer) for layer in layers) == added_weights
    unit = paper[-1]
    if rounded == 'total':
        assert paper_format(added, unit) == paper
    elif rounded == 'weights':  # the paper counts DySample's offset weights (no biases)
        assert paper_format(added_weights, unit) == paper
    else:  # A2U: see configs/depth/README.md (neither count rounds to the paper's 30.0K)
        assert (paper_format(added, unit), paper_format(added_weights, unit)) == (
            '+31.1K', '+28.0K')


@pytest.mark.slow
@pytest.mark.parametrize('row', ['dysample', 'sapa-b'])
def test_a_rows_head_is_the_bilinear_head_plus_its_stage_upsamplers(row, bilinear_head):
    head = build_model(depth_config(row).model.decode_head)
    assert [u.in_channels for u in head.upsamplers] == STAGE_CHANNELS
    if getattr(head.upsamplers[0], 'requires_guide', False):
        assert [u.guide_channels for u in head.upsamplers] == GUIDE_CHANNELS
    assert num_params(head) - num_params(bilinear_head) == ROWS[row][1]
    rest = {k: v.shape for k, v in head.state_dict().items() if not k.startswith('upsamplers.')}
    assert rest == {k: v.shape for k, v in bilinear_head.state_dict().items()}


@pytest.mark.slow
def test_a_full_learned_build_is_bilinear_plus_the_delta():
    model = build_model(depth_config('dysample').model)
    assert num_params(model) == BILINEAR_TOTAL + ROWS['dysample'][1]
    assert len(model.decode_head.upsamplers) == 4


def test_recipe_is_the_toolbox_nyu_schedule():
    cfg = depth_config('bilinear')
    assert cfg.train_cfg.max_iters == 38_400 and cfg.train_cfg.val_interval == 1600
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                                               weight_decay=0.01)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert cfg.train_dataloader.batch_size == 8 and cfg.auto_scale_lr.base_batch_size == 16
    # the metafile gives the total batch (2 GPUs x 8), as the other metafiles do
    with open(osp.join(DEPTH_CONFIGS, 'metafile.yml')) as f:
        models = yaml.safe_load(f)['Models']
    assert {m['Metadata']['Batch Size'] for m in models} == {cfg.auto_scale_lr.base_batch_size}
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-3, 12_800)
    assert (cosine.type, cosine.end, cosine.eta_min) == ('CosineAnnealingLR', 38_400,
                                                         pytest.approx(6e-13))
    evaluator = {k: v for k, v in cfg.val_evaluator.items() if k != '_scope_'}
    assert evaluator == dict(type='DepthMetric', min_depth_eval=1e-3, max_depth_eval=10.0,
                             crop_type='nyu_crop')
    head = cfg.model.decode_head
    assert (head.min_depth, head.max_depth, head.align_corners) == (1e-3, 10.0, True)
    backbone = cfg.model.backbone
    assert (backbone.embed_dims, backbone.depths, backbone.window_size,
            backbone.drop_path_rate) == (96, [2, 2, 6, 2], 7, 0.3)
    assert 'swin_tiny_patch4_window7_224' in backbone.init_cfg.checkpoint
    crop = [t for t in cfg.train_pipeline if t.type == 'RandomCrop'][0]
    assert crop.crop_size == (416, 544) == cfg.model.data_preprocessor.size
    assert cfg.model.test_cfg == dict(mode='slide_flip', crop_size=(480, 640),
                                      stride=(480, 640))


def test_dysample_rows_use_the_papers_variants():
    from mmdysample.upsamplers import DySample
    layer = stage_upsamplers(depth_config('dysample-s-plus').model.decode_head.upsample_cfg)[0]
    assert isinstance(layer, DySample) and (layer.style, layer.groups, layer.dyscope) == (
        'pl', 8, True)
