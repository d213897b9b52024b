"""Build step that pyproject.toml cannot express: ship the configs and the model index
inside the package, under ``mmdysample/.mim/`` as OpenMMLab packages do, so that an installed
wheel carries them (mmengine resolves ``'mmdysample::<config>'`` there) without copying them
into the source tree. Everything else is declared in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (source in the checkout, destination inside the built package)
MIM_FILES = (('configs', 'configs'), ('model-index.yml', 'model-index.yml'))


class BuildPyWithMimFiles(build_py):
    """``build_py`` that also copies :data:`MIM_FILES` to ``<build_lib>/mmdysample/.mim/``."""

    def run(self):
        super().run()
        mim_dir = Path(self.build_lib) / 'mmdysample' / '.mim'
        for source, destination in MIM_FILES:
            source_path, target = ROOT / source, mim_dir / destination
            if not source_path.exists():  # e.g. an sdist made without them
                raise FileNotFoundError(f'{source_path} is missing: the package data under '
                                        'mmdysample/.mim/ is built from it')
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            if source_path.is_dir():
                shutil.copytree(source_path, target,
                                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copy2(source_path, target)


setup(cmdclass={'build_py': BuildPyWithMimFiles})
