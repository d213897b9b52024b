"""mmdysample.versions: the supported versions, the same in pyproject.toml and at import."""
import os
import subprocess
import sys
import tomllib
import warnings

import pytest

from mmdysample import versions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyproject_declares_the_supported_versions():
    # every bound in the dependencies and in every extra is the one SUPPORTED_VERSIONS gives
    from packaging.requirements import Requirement
    with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
        project = tomllib.load(f)['project']
    requirements = list(project['dependencies'])
    for extra in project['optional-dependencies'].values():
        requirements += extra
    declared = {}
    for requirement in map(Requirement, requirements):
        declared.setdefault(requirement.name, set()).add(str(requirement.specifier))
    for name in versions.SUPPORTED_VERSIONS:
        expected = Requirement(versions._requirement(name)).specifier
        assert declared.get(name) == {str(expected)}, name


@pytest.mark.parametrize('name, installed, supported', [
    ('torch', '2.6.0', False), ('torch', '2.7.0', True), ('torch', '2.13.0+cpu', True),
    ('mmengine', '0.10.6', False), ('mmengine', '0.10.7', True), ('mmengine', '0.11.0', False),
    ('mmcv', '2.2.0', False), ('mmcv', '2.1.0', True), ('mmdet', '3.4.0rc1', False),
    ('mmsegmentation', '1.2.2', True), ('mmsegmentation', '1.1.0', False),
    ('mmpretrain', '1.3.0', False),
])
def test_check_version_bounds(name, installed, supported):
    if supported:
        assert versions.check_version(name, installed) == installed
    else:
        with pytest.raises(versions.UnsupportedVersionError) as error:
            versions.check_version(name, installed)
        assert f'{name} {installed} is installed' in str(error.value)
        assert versions._requirement(name) in str(error.value)


def test_the_installed_stack_is_supported():
    installed = versions.check_versions()
    assert installed['torch'] and installed['mmengine']


def test_unknown_distribution_is_named():
    with pytest.raises(ValueError, match=r"distribution must be one of .*'torch'.*got 'numpy'"):
        versions.check_version('numpy')


def _import_with(fake_versions):
    """``import mmdysample`` in a fresh interpreter whose metadata reports ``fake_versions``."""
    code = ('import importlib.metadata as m\n'
            f'fake = {fake_versions!r}\n'
            'real = m.version\n'
            'm.version = lambda name: fake.get(name) or real(name)\n'
            'import mmdysample\n')
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=env, timeout=300)


def test_import_stops_on_an_old_torch_naming_both_versions():
    # fails before torch or mmengine is imported: a fraction of a second
    result = _import_with({'torch': '2.1.2'})
    assert result.returncode != 0
    assert ('UnsupportedVersionError: mmdysample needs torch>=2.7, but torch 2.1.2 is '
            'installed') in result.stderr


@pytest.mark.parametrize('mmdet_version, warned', [('3.4.0', True), ('3.3.0', False),
                                                   (None, False)])
def test_check_installed_warns_only_for_an_unsupported_installed_task_library(
        monkeypatch, mmdet_version, warned):
    """What ``import mmdysample`` runs first: mmdet 3.4 installed gives a warning naming it,
    a supported or absent (``None``) mmdet nothing; the other task libraries are absent."""
    real = versions.installed_version
    monkeypatch.setattr(versions, 'installed_version', lambda name: (
        mmdet_version if name == 'mmdet' else
        None if name in versions.TASK_DISTRIBUTIONS else real(name)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        versions.check_installed()
    assert [str(w.message) for w in caught] == [
        'mmdysample needs mmdet>=3.3.0,<3.4, but mmdet 3.4.0 is installed: install a supported '
        'version (pip install "mmdet>=3.3.0,<3.4"; supported versions: docs/training.md)'
    ] * warned


def test_check_installed_stops_without_torch_or_mmengine(monkeypatch):
    real = versions.installed_version
    monkeypatch.setattr(versions, 'installed_version',
                        lambda name: None if name == 'mmengine' else real(name))
    with pytest.raises(versions.UnsupportedVersionError,
                       match=r'needs mmengine>=0.10.7,<0.11, but mmengine is not installed'):
        versions.check_installed()
