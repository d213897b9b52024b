"""Build installed mmseg configs and record what a user could tell apart (run as a script).

``python upstream_equivalence_worker.py OUT.pt {upstream,plugin} CONFIG[:odd] ...`` builds each
config's model (``torch.manual_seed(0)`` first) in this process, with or without
``import mmdysample``, and saves to ``OUT.pt``: per config the class of every module, the
names/shapes/dtypes of parameters, buffers and state-dict entries, and for configs marked
``:odd`` the eval-mode output of ``model._forward`` on a 1x3x97x75 image (odd, unpadded).
"""
import sys
from pathlib import Path

import torch


def main(out_path, mode, *specs):
    if mode == 'plugin':
        import mmdysample  # noqa: F401
    elif mode != 'upstream':
        raise SystemExit(f'mode must be upstream or plugin, got {mode!r}')
    import mmseg
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    torch.set_num_threads(1)
    configs = Path(mmseg.__file__).parent / '.mim' / 'configs'
    results = {}
    for spec in specs:
        name, _, odd = spec.partition(':')
        torch.manual_seed(0)
        model = MODELS.build(Config.fromfile(configs / name).model)
        record = dict(
            modules=[(n, f'{type(m).__module__}.{type(m).__qualname__}')
                     for n, m in model.named_modules()],
            parameters=[(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()],
            buffers=[(n, tuple(b.shape), b.dtype) for n, b in model.named_buffers()],
            state_dict=[(k, tuple(v.shape)) for k, v in model.state_dict().items()])
        if odd:
            image = torch.randn(1, 3, 97, 75, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                record['output'] = model.eval()._forward(image)
        results[name] = record
        del model
    torch.save(results, out_path)


if __name__ == '__main__':
    main(*sys.argv[1:])
