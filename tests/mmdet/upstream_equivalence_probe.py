"""Build the patched modules of a sample of installed upstream configs and record them.

Run as ``python upstream_equivalence_probe.py OUT.pt [--plugin]`` by
``test_mmdet_upstream_equivalence.py``: once without and once with ``import mmdysample``, in
separate processes, so that the first sees only upstream's registries. For every sampled
(config, module path) it builds the module under a fixed seed and records its class, its
state-dict keys, shapes and dtypes, its parameter names, and (where cheap) its outputs on
fixed inputs at an unpadded odd image size.
"""
import os
import sys

import torch

# (package, config relative to its .mim/configs, path of the module inside ``model``,
# whether to run it): one or a few configs for each folder that uses a patched module.
SAMPLE = [
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


def main():
    out_path, use_plugin = sys.argv[1], '--plugin' in sys.argv
    torch.set_num_threads(1)
    from mmdet.utils import register_all_modules as register_mmdet
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.utils import register_all_modules as register_mmseg
    register_mmdet(init_default_scope=False)
    register_mmseg(init_default_scope=False)
    if use_plugin:
        import mmdysample  # noqa: F401
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    records = {}
    for package, name, path, run in SAMPLE:
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
    torch.save(records, out_path)


if __name__ == '__main__':
    main()
