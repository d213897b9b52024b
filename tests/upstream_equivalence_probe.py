"""Build installed upstream configs and record what a user could tell apart.

Two records, made once without and once with ``import mmdysample`` (the upstream side in an
interpreter of its own, so that it sees only upstream's registries):

* ``'mmdet'`` (tests/mmdet/test_mmdet_upstream_equivalence.py): for every sampled (config,
  module path) of :data:`MMDET_SAMPLE` the module built under a fixed seed: its class, its
  state-dict keys, shapes and dtypes, its parameter names, and (where cheap) its outputs on
  fixed inputs at an unpadded odd image size;
* ``'mmseg'`` (tests/mmseg/test_upstream_equivalence.py): for each config of
  :data:`MMSEG_SAMPLE` the whole model (``torch.manual_seed(0)`` first): the class of every
  module, the names/shapes/dtypes of parameters, buffers and state-dict entries, and for
  configs marked ``:odd`` the eval-mode output of ``model._forward`` on a 1x3x97x75 image.

``python upstream_equivalence_probe.py OUT.pt [--plugin]`` writes them to ``OUT.pt``;
:func:`record_plugin_side` does it in a process that has imported mmdysample already (a
child of tests/forked_runs.py's forkserver). One process per side for both libraries:
the imports of torch, mmdet and mmseg are most of a probe's time.
"""
import os
import sys

import torch

# (package, config relative to its .mim/configs, path of the module inside ``model``,
# whether to run it): one or a few configs for each folder that uses a patched module.
MMDET_SAMPLE = [
    ('mmdet', 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', ('neck', ), True),
    ('mmdet', 'retinanet/retinanet_r50_fpn_1x_coco.py', ('neck', ), True),
    ('mmdet', 'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', ('neck', ), True),
    ('mmdet', 'atss/atss_r50_fpn_1x_coco.py', ('neck', ), False),
    ('mmdet', 'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py', ('neck', ), False),
    ('mmdet', 'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py', ('roi_head', 'mask_head'),
     True),
    ('mmdet', 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', ('neck', ), True),
    ('mmdet', 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', ('roi_head', 'mask_head'), True),
    ('mmdet', 'ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py', ('roi_head', 'mask_head'), False),
    ('mmdet', 'gn/mask-rcnn_r50_fpn_gn-all_2x_coco.py', ('roi_head', 'mask_head'), True),
    ('mmdet', 'panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py', ('semantic_head', ), False),
    ('mmdet', 'rtmdet/rtmdet_s_8xb32-300e_coco.py', ('neck', ), True),
    ('mmdet', 'rtmdet/rtmdet_tiny_8xb32-300e_coco.py', ('neck', ), False),
    ('mmdet', 'rtmdet/rtmdet-ins_s_8xb32-300e_coco.py', ('neck', ), False),
    ('mmdet', 'yolox/yolox_s_8xb8-300e_coco.py', ('neck', ), True),
    ('mmdet', 'yolox/yolox_tiny_8xb8-300e_coco.py', ('neck', ), False),
    ('mmdet', 'bytetrack/bytetrack_yolox_x_8xb4-80e_crowdhuman-mot17halftrain_'
     'test-mot17halfval.py', ('detector', 'neck'), False),
    ('mmdet', 'maskformer/maskformer_r50_ms-16xb1-75e_coco.py', ('panoptic_head', ), True),
    ('mmdet', 'mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
     ('panoptic_head', ), True),
    ('mmseg', 'maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py',
     ('decode_head', ), True),
    ('mmseg', 'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
     ('decode_head', ), True),
]

# mmseg config (under mmseg's configs, ``:odd``: run it) -> the patched classes it contains:
# the smallest ResNet or MiT config of each family that uses a module the plugin patches
MMSEG_SAMPLE = {
    'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py:odd': {'SegformerHead'},
    'upernet/upernet_r18_4xb4-80k_ade20k-512x512.py:odd': {'UPerHead'},
    'deeplabv3plus/deeplabv3plus_r18-d8_4xb4-80k_loveda-512x512.py:odd':
        {'DepthwiseSeparableASPPHead'},
    'sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py:odd': {'FPN', 'FPNHead'},
}

IMAGE = (75, 101)  # unpadded odd image size


def config_path(package, name):
    import importlib
    root = os.path.dirname(importlib.import_module(package).__file__)
    return os.path.join(root, '.mim', 'configs', name)


def level_sizes(strides):
    return [(-(-IMAGE[0] // s), -(-IMAGE[1] // s)) for s in strides]


def features(channels, sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, c, h, w, generator=gen) for c, (h, w) in zip(channels, sizes)]


def run_module(module):
    """Outputs of ``module`` on fixed inputs at IMAGE (or an exact x2 pyramid where the
    upstream module needs one), as a list of tensors."""
    name = type(module).__name__
    with torch.no_grad():
        if name in ('FPN', 'UpsamplerFPN'):
            n = len(module.in_channels)
            outs = module(features(module.in_channels, level_sizes([4 * 2**i for i in range(n)]),
                                   0))
        elif name in ('CSPNeXtPAFPN', 'YOLOXPAFPN'):
            sizes = [(20, 28), (10, 14), (5, 7)]  # exact x2 pyramid, odd at 1/32
            outs = module(features(module.in_channels, sizes, 0))
        elif name == 'FCNMaskHead':
            outs = [module(features([module.in_channels], [(14, 14)], 0)[0])]
        else:  # MaskFormer / Mask2Former heads: their pixel decoder
            decoder = module.pixel_decoder
            channels = [decoder.lateral_convs[0].conv.in_channels, 512, 1024, 2048] \
                if type(decoder).__name__ == 'MSDeformAttnPixelDecoder' else \
                decoder.in_channels
            feats = features(channels, level_sizes([4, 8, 16, 32]), 0)
            if type(decoder).__name__ == 'MSDeformAttnPixelDecoder':
                mask_feature, levels = decoder(feats)
            else:
                metas = [dict(batch_input_shape=IMAGE, img_shape=IMAGE)]
                mask_feature, memory = decoder(feats, metas)
                levels = [memory]
            outs = [mask_feature] + list(levels)
    return [o.detach().clone() for o in outs]


def record_mmdet():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as MMSEG_MODELS
    records = {}
    for package, name, path, run in MMDET_SAMPLE:
        cfg = Config.fromfile(config_path(package, name), import_custom_modules=False)
        module_cfgs = cfg.model
        for key in path:
            module_cfgs = module_cfgs[key]
        if not isinstance(module_cfgs, list):
            module_cfgs = [module_cfgs]
        registry = MMDET_MODELS if package == 'mmdet' else MMSEG_MODELS
        for index, module_cfg in enumerate(module_cfgs):
            with DefaultScope.overwrite_default_scope(package):
                torch.manual_seed(0)
                module = registry.build(module_cfg)
            module.eval()
            state = module.state_dict()
            records[(package, name, path, index)] = dict(
                upstream_class=next(c for c in type(module).__mro__
                                    if c.__module__.split('.')[0] in ('mmdet', 'mmseg'))
                .__qualname__,
                state=[(k, tuple(v.shape), str(v.dtype)) for k, v in state.items()],
                values=state if run else None,
                parameters=[k for k, _ in module.named_parameters()],
                outputs=run_module(module) if run else None)
    return records


def record_mmseg():
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    results = {}
    for spec in MMSEG_SAMPLE:
        name, _, odd = spec.partition(':')
        with DefaultScope.overwrite_default_scope('mmseg'):
            torch.manual_seed(0)
            model = MODELS.build(Config.fromfile(config_path('mmseg', name)).model)
        record = dict(
            modules=[(n, f'{type(m).__module__}.{type(m).__qualname__}')
                     for n, m in model.named_modules()],
            parameters=[(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()],
            buffers=[(n, tuple(b.shape), b.dtype) for n, b in model.named_buffers()],
            state_dict=[(k, tuple(v.shape)) for k, v in model.state_dict().items()])
        if odd:
            image = torch.randn(1, 3, 97, 75, generator=torch.Generator().manual_seed(1))
            with torch.no_grad(), DefaultScope.overwrite_default_scope('mmseg'):
                record['output'] = model.eval()._forward(image)
        results[name] = record
        del model
    return results


def record(out_path, use_plugin):
    """Both records, built with (``use_plugin``) or without mmdysample, to ``out_path``."""
    torch.set_num_threads(1)
    from mmdet.utils import register_all_modules as register_mmdet
    from mmseg.utils import register_all_modules as register_mmseg
    register_mmdet(init_default_scope=False)
    register_mmseg(init_default_scope=False)
    if use_plugin:
        import mmdysample  # noqa: F401
    elif 'mmdysample' in sys.modules:
        raise SystemExit('the upstream side must run where mmdysample was never imported')
    torch.save(dict(mmdet=record_mmdet(), mmseg=record_mmseg()), out_path)


def record_plugin_side(out_path):
    """The plugin side, in a process that has imported mmdysample (after mmdet and mmseg, as
    :func:`record` imports it)."""
    assert 'mmdysample' in sys.modules
    record(out_path, use_plugin=True)


if __name__ == '__main__':
    record(sys.argv[1], use_plugin='--plugin' in sys.argv)
