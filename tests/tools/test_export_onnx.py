"""tools/deploy/export_onnx.py: a shrunk SegFormer and a shrunk Faster R-CNN backbone+neck, both
with DySample, exported and checked in onnxruntime through the tool's main(); the output
against mmseg's and mmdet's own inference; the error paths."""
import onnx
import onnxruntime as ort
import pytest
import torch

from tools_testing import DEMO_DET_DYSAMPLE, DEMO_SEG_DYSAMPLE, load_tool

from tool_helpers import build_model


@pytest.fixture(scope='module')
def export_tool():
    return load_tool('deploy/export_onnx')


def checkpoint_with_moving_offsets(config, path, seed):
    """A random model of ``config`` whose DySample layers move their sampling points by up to
    about a pixel (the initialisation keeps them within 0.01), saved to ``path``."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if '.upsamplers.' in name and '.offset.' in name:
                param.normal_(0, 0.3)
    torch.save(dict(state_dict=model.state_dict()), path)
    return build_model(config, checkpoint=str(path))


def run_onnx(path, inputs):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return [torch.from_numpy(out) for out in session.run(None, {'inputs': inputs.numpy()})]


def op_types(path):
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.slow
def test_segformer_with_checkpoint_matches_mmseg_inference(export_tool, tmp_path, capsys):
    """Default (dynamo) exporter, a checkpoint, an input size that is not square: the graph
    holds the head's 6 DySample layers as GridSample; onnxruntime's logits and classes are
    mmseg's ``predict`` (logits resized to the image size, arg-max)."""
    from mmseg.structures import SegDataSample

    model = checkpoint_with_moving_offsets(DEMO_SEG_DYSAMPLE, tmp_path / 'seg.pth', seed=1)
    out = tmp_path / 'seg.onnx'
    code = export_tool.main([DEMO_SEG_DYSAMPLE, str(tmp_path / 'seg.pth'), '--out', str(out),
                             '--shape', '64', '96', '--verify'])
    printed = capsys.readouterr().out
    assert code == 0
    assert f'weights: {tmp_path / "seg.pth"}' in printed
    assert 'dynamo exporter, opset 18' in printed
    assert 'seg_logits (1, 7, 64, 96) float32' in printed
    assert 'segmentation (1, 1, 64, 96) int64' in printed
    assert 'seg_logits: max abs diff' in printed and 'verification passed' in printed
    assert "mean=[123.675, 116.28, 103.53]" in printed and 'RGB order' in printed
    model_proto = onnx.load(str(out))
    onnx.checker.check_model(model_proto, full_check=True)
    assert [o.name for o in model_proto.graph.output] == ['seg_logits', 'segmentation']
    assert op_types(out).count('GridSample') == 6

    inputs = torch.randn(1, 3, 64, 96)
    seg_logits, segmentation = run_onnx(out, inputs)
    meta = dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96),
                padding_size=[0, 0, 0, 0])
    with torch.no_grad():
        (result, ) = model.predict(inputs, [SegDataSample(metainfo=meta)])
    torch.testing.assert_close(seg_logits[0], result.seg_logits.data, atol=1e-4, rtol=0)
    # classes agree wherever the two best logits are not within rounding of each other
    top2 = result.seg_logits.data.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4
    assert clear.float().mean() > 0.99
    assert torch.equal(segmentation[0][clear[None]], result.pred_sem_seg.data[clear[None]])


@pytest.mark.slow
def test_faster_rcnn_backbone_neck_legacy_exporter_matches_extract_feat(export_tool, tmp_path,
                                                                         capsys):
    """Legacy exporter, a checkpoint: the five FPN maps (strides 4 to 64), its three DySample
    top-down steps as GridSample, equal to mmdet's ``extract_feat``."""
    model = checkpoint_with_moving_offsets(DEMO_DET_DYSAMPLE, tmp_path / 'det.pth', seed=2)
    out = tmp_path / 'det.onnx'
    code = export_tool.main([DEMO_DET_DYSAMPLE, str(tmp_path / 'det.pth'), '--out', str(out),
                             '--shape', '64', '96', '--exporter', 'legacy', '--verify'])
    printed = capsys.readouterr().out
    assert code == 0 and 'verification passed' in printed
    assert 'legacy exporter, opset 18' in printed
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert op_types(out).count('GridSample') == 3
    inputs = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model.extract_feat(inputs)
    got = run_onnx(out, inputs)
    assert [tuple(t.shape) for t in got] == [(1, 64, 64 // s, 96 // s) for s in (4, 8, 16, 32)] \
        + [(1, 64, 1, 2)]
    for ours, ref in zip(got, expected):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_random_initialisation_is_said_and_a_tolerance_miss_exits_1(export_tool, tmp_path,
                                                                    capsys):
    """Dynamo, no checkpoint: the output says the weights are random; with zero tolerance
    onnxruntime's float rounding is a miss: exit code 1, the output named."""
    out = tmp_path / 'det.onnx'
    code = export_tool.main([DEMO_DET_DYSAMPLE, '--out', str(out), '--shape', '64', '64',
                             '--verify', '--atol', '0', '--rtol', '0'])
    captured = capsys.readouterr()
    assert code == 1
    assert 'weights: random initialisation (no checkpoint given)' in captured.out
    assert 'feat0: max abs diff' in captured.out and 'ABOVE atol=0 rtol=0' in captured.out
    assert 'verification FAILED' in captured.err
    assert out.exists()


def test_detector_without_neck_is_refused(export_tool, tmp_path):
    with pytest.raises(SystemExit, match='cannot export FasterRCNN: the backbone\\+neck export '
                       'needs a detector with a neck'):
        export_tool.main([DEMO_DET_DYSAMPLE, '--out', str(tmp_path / 'x.onnx'), '--shape', '64',
                          '64', '--cfg-options', 'model.neck=None'])
    assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.parametrize('arguments, message', [
    (['missing.py', '--out', 'x.onnx'], 'config not found: missing.py'),
    ([DEMO_SEG_DYSAMPLE, 'missing.pth', '--out', 'x.onnx'], 'checkpoint not found: missing.pth'),
    ([DEMO_SEG_DYSAMPLE, '--out', 'x.onnx', '--opset', '16'], '--opset must be >= 17'),
    ([DEMO_SEG_DYSAMPLE, '--out', 'x.onnx', '--shape', '0', '64'], '--shape and --batch must be '
     'positive'),
    ([DEMO_SEG_DYSAMPLE, '--out', 'x.onnx', '--exporter', 'onnx'], "invalid choice: 'onnx'"),
    ([DEMO_SEG_DYSAMPLE], 'the following arguments are required: --out'),
])
def test_bad_arguments_exit_2(export_tool, capsys, arguments, message):
    with pytest.raises(SystemExit) as excinfo:
        export_tool.main(arguments)
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err
