"""model-index.yml (what OpenMMLab's `mim` reads) imports every task folder's metafile."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_model_index_imports_exactly_the_metafiles_and_their_configs_exist():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    imported = sorted(index['Import'])
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').glob('*/metafile.yml'))
    assert imported == on_disk
    for metafile in imported:
        models = yaml.safe_load((ROOT / metafile).read_text())['Models']
        assert models, metafile
        for model in models:
            assert (ROOT / model['Config']).is_file(), (metafile, model['Config'])
