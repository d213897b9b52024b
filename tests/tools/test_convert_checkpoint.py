"""tools/convert_checkpoint.py: fork layouts -> this plugin's keys, checked by outputs."""
import pytest
import torch
from mmengine.registry import DefaultScope
from tools_testing import DEMO_SEG_DYSAMPLE, reference_dysample

from mmdysample.mmdet import UpsamplerFPN
from mmdysample.mmseg import SegformerHead


def _randomize(module, seed):
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator, dtype=torch.float64) * 0.5
            if v.is_floating_point() and not k.endswith(('init_pos', 'running_mean',
                                                         'running_var')) else v
            for k, v in module.state_dict().items()}


def _fork_fpn_state(fpn, seed=0):
    """A detection-fork state dict: neck.upsample_modules.{i}.*, no init_pos saved."""
    ours = _randomize(fpn, seed)
    fork = {}
    for key, value in ours.items():
        if key.startswith('upsamplers.'):
            if key.endswith('init_pos'):
                continue
            key = key.replace('upsamplers.', 'upsample_modules.', 1)
        fork['neck.' + key] = value
    return fork


@pytest.fixture(scope='module')
def fpn_pair():
    kwargs = dict(in_channels=[8, 16, 32, 64], out_channels=16, num_outs=5,
                  upsample_cfg=dict(type='DySample+', scope_bias=True))
    return UpsamplerFPN(**kwargs).eval(), UpsamplerFPN(**kwargs).double().eval()


def fork_fpn_reference(fpn_like, fork_state, inputs, step_of_index):
    """The fork's top-down pathway: laterals[i-1] += upsample_modules[k](laterals[i]) with
    k = step_of_index[i - 1], run with the fork's own parameters."""
    laterals = [conv(x) for conv, x in zip(fpn_like.lateral_convs, inputs)]
    for i in range(len(laterals) - 1, 0, -1):
        k = step_of_index[i - 1]
        prefix = f'neck.upsample_modules.{k}.'
        params = {key[len(prefix):]: v for key, v in fork_state.items() if key.startswith(prefix)}
        laterals[i - 1] = laterals[i - 1] + reference_dysample(laterals[i], params, groups=4,
                                                               dyscope=True)
    return [fpn_like.fpn_convs[i](laterals[i]) for i in range(len(laterals))]


@pytest.mark.parametrize('index_map', [None, [2, 1, 0]])
def test_detection_fork_outputs_match(convert_tool, fpn_pair, index_map):
    source_fpn, target = fpn_pair
    fork = _fork_fpn_state(source_fpn)
    converted, report = convert_tool.convert_state_dict(fork, neck_index_map=index_map)
    assert len(report.renamed) == 3 * 4  # offset.w/b, scope.w/b per step
    assert not report.unmapped
    assert any('scope_bias=True' in note for note in report.notes)
    converted = convert_tool.check_against_model(
        {k[len('neck.'):]: v for k, v in converted.items()}, target, report)
    assert sorted(report.filled) == [f'upsamplers.{j}.init_pos' for j in range(3)]
    assert report.ok, report.format()
    target.load_state_dict(converted, strict=True)
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, c, 32 // 2**i, 32 // 2**i, generator=generator,
                          dtype=torch.float64)
              for i, c in enumerate([8, 16, 32, 64])]
    # index_map=[2,1,0]: the fork's index k serves our step j = map[k]
    mapping = [0, 1, 2] if index_map is None else [index_map.index(j) for j in range(3)]
    expected = fork_fpn_reference(target, fork, inputs, mapping)
    with torch.no_grad():
        outputs = target(tuple(inputs))
        for out, exp in zip(outputs, expected):
            torch.testing.assert_close(out, exp, rtol=1e-9, atol=1e-10)


def test_scope_bias_without_option_is_reported(convert_tool):
    source = UpsamplerFPN([8, 16], 8, 2, upsample_cfg=dict(type='DySample+', scope_bias=True))
    target = UpsamplerFPN([8, 16], 8, 2, upsample_cfg=dict(type='DySample+'))
    fork = _fork_fpn_state(source)
    converted, report = convert_tool.convert_state_dict(fork)
    convert_tool.check_against_model({k[5:]: v for k, v in converted.items()}, target, report)
    assert report.unexpected == ['upsamplers.0.scope.bias']
    assert not report.ok


def _head(**extra):
    # in mmseg's scope (its loss is built from mmseg's registry), whatever scope an earlier
    # test of this process left current
    with DefaultScope.overwrite_default_scope('mmseg'):
        return SegformerHead(in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], channels=16,
                             num_classes=3, norm_cfg=dict(type='BN'),
                             upsample_cfg=dict(type='DySample', **extra)).eval()


def fork_head_reference(head, inputs, params_of_chain):
    """SegFormer head forward with the chain of input l using params_of_chain(l, step)."""
    outs = []
    for level, (x, conv) in enumerate(zip(inputs, head.convs)):
        feat = conv(x)
        for step in range(level):
            feat = reference_dysample(feat, params_of_chain(level, step), groups=4)
        outs.append(feat)
    return head.cls_seg(head.fusion_conv(torch.cat(outs, dim=1)))


@pytest.mark.parametrize('layout', ['flat', 'nested-from-1', 'nested-from-0'])
def test_segmentation_fork_outputs_match(convert_tool, layout):
    source = _head()
    ours = _randomize(source, 3)
    fork, chain_prefix = {}, {}
    for key, value in ours.items():
        if key.startswith('upsamplers.'):
            if key.endswith('init_pos'):
                continue
            index, rest = key[len('upsamplers.'):].split('.', 1)
            level = next(lv for lv in (1, 2, 3) if int(index) < lv * (lv + 1) // 2)
            step = int(index) - level * (level - 1) // 2
            if layout == 'flat':
                prefix = f'decode_head.upsample_modules.{index}.'
            else:
                first = 1 if layout == 'nested-from-1' else 0
                prefix = f'decode_head.upsample_modules.{level - 1 + first}.{step}.'
            chain_prefix[(level, step)] = prefix
            fork[prefix + rest] = value
        else:
            fork['decode_head.' + key] = value
    converted, report = convert_tool.convert_state_dict(fork)
    assert len(report.renamed) == 12 and not report.unmapped
    target = _head().double()
    state = convert_tool.check_against_model(
        {k[len('decode_head.'):]: v for k, v in converted.items()}, target, report)
    assert report.ok, report.format()
    target.load_state_dict(state, strict=True)

    def params_of_chain(level, step):
        prefix = chain_prefix[(level, step)]
        return {k[len(prefix):]: v for k, v in fork.items() if k.startswith(prefix)}

    generator = torch.Generator().manual_seed(4)
    inputs = [torch.randn(1, c, 16 // 2**i, 16 // 2**i, generator=generator,
                          dtype=torch.float64)
              for i, c in enumerate([8, 16, 32, 64])]
    with torch.no_grad():
        torch.testing.assert_close(target(inputs), fork_head_reference(target, inputs,
                                                                       params_of_chain),
                                   rtol=1e-9, atol=1e-10)


def test_unmapped_and_bad_maps(convert_tool):
    state = {'neck.upsample_modules.offset.weight': torch.zeros(1),
             'neck.upsample_modules.0.offset.weight': torch.zeros(1),
             'neck.upsample_modules.3.offset.weight': torch.zeros(1),
             'decode_head.upsample_modules.0.offset.weight': torch.zeros(1),
             'decode_head.upsample_modules.1.0.offset.weight': torch.zeros(1),
             'backbone.conv.weight': torch.zeros(1)}
    converted, report = convert_tool.convert_state_dict(state, neck_index_map=[1, 0])
    unmapped = dict(report.unmapped)
    assert set(unmapped) == {'neck.upsample_modules.offset.weight',
                             'neck.upsample_modules.3.offset.weight',
                             'decode_head.upsample_modules.0.offset.weight',
                             'decode_head.upsample_modules.1.0.offset.weight'}
    assert 'mixes flat' in unmapped['decode_head.upsample_modules.0.offset.weight']
    assert list(converted) == ['neck.upsamplers.1.offset.weight', 'backbone.conv.weight']
    assert report.unchanged == ['backbone.conv.weight'] and not report.ok
    with pytest.raises(ValueError, match='neck_index_map must be a permutation'):
        convert_tool.convert_state_dict(state, neck_index_map=[0, 0])
    with pytest.raises(TypeError, match='state_dict must be a dict'):
        convert_tool.convert_state_dict([('a', torch.zeros(1))])


def test_cli_with_config(convert_tool, tmp_path):
    from tool_helpers import build_model
    model = build_model(DEMO_SEG_DYSAMPLE)
    state = {k.replace('decode_head.upsamplers.', 'decode_head.upsample_modules.'): v
             for k, v in model.state_dict().items() if not k.endswith('init_pos')}
    state['decode_head.upsample_modules.0.offset.bias'] = torch.full_like(
        state['decode_head.upsample_modules.0.offset.bias'], 0.5)
    src, dst = tmp_path / 'fork.pth', tmp_path / 'converted.pth'
    torch.save(dict(state_dict=state, meta=dict(epoch=3), optimizer={}), src)
    assert convert_tool.main([str(src), str(dst), '--config', DEMO_SEG_DYSAMPLE]) == 0
    output = torch.load(dst, weights_only=False)
    assert set(output) == {'state_dict', 'meta'} and output['meta']['epoch'] == 3
    fresh = build_model(DEMO_SEG_DYSAMPLE)
    fresh.load_state_dict(output['state_dict'], strict=True)
    assert torch.equal(fresh.decode_head.upsamplers[0].offset.bias,
                       torch.full((32, ), 0.5))
    # a checkpoint that does not fit is not written without --allow-partial
    del state['decode_head.conv_seg.weight']
    torch.save(state, src)
    assert convert_tool.main([str(src), str(tmp_path / 'no.pth'), '--config',
                              DEMO_SEG_DYSAMPLE]) == 1
    assert not (tmp_path / 'no.pth').exists()


def test_cli_arguments(convert_tool):
    args = convert_tool.parse_args(['in.pth', 'out.pth', '--cfg-options',
                                    'model.neck.upsample_cfg.scope_bias=True',
                                    '--neck-index-map', '2', '1', '0'])
    assert args.cfg_options == {'model.neck.upsample_cfg.scope_bias': True}
    assert args.neck_index_map == [2, 1, 0] and args.head_index_map is None
