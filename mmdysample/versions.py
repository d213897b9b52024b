"""The versions mmdysample supports, and the check run when it is imported.

One table, :data:`SUPPORTED_VERSIONS`, matches the ``dependencies`` bounds of
``pyproject.toml`` (a test keeps them equal). The lower bounds are

* torch 2.7: the first release with every torch API mmdysample calls
  (``torch.compiler.is_compiling``, 2.3; ``torch.library.custom_op`` for the fused kernel,
  2.4; ``torch.compiler.is_exporting`` in ``mmdysample/ops/sampling.py``, first documented
  in 2.7). Tested: torch 2.13.0 only;
* the OpenMMLab packages: the releases the code was written and tested against (mmengine
  0.10.7, mmcv 2.1.0, mmdet 3.3.0, mmsegmentation 1.2.2, mmpretrain 1.2.0); the upper bounds
  are the next minor releases (mmcv < 2.2 is also what mmdet 3.3 requires), because
  :mod:`mmdysample.compat` and the patched necks/heads rely on these releases' internals.

This module imports nothing but the standard library: it reads the installed
distributions' metadata, so checking does not import torch or an OpenMMLab package.
``import mmdysample`` runs :func:`check_installed` first.
"""
import importlib.metadata
import re
import warnings
from typing import Dict, Optional, Tuple

__all__ = [
    'SUPPORTED_VERSIONS', 'UnsupportedVersionError', 'check_version', 'check_versions',
    'check_installed'
]

# distribution name -> (lowest supported, first unsupported or None)
SUPPORTED_VERSIONS: Dict[str, Tuple[str, Optional[str]]] = {
    'torch': ('2.7', None),
    'mmengine': ('0.10.7', '0.11'),
    'mmcv': ('2.1.0', '2.2.0'),
    'mmdet': ('3.3.0', '3.4'),
    'mmsegmentation': ('1.2.2', '1.3'),
    'mmpretrain': ('1.2.0', '1.3'),
}
# Needed by every part of mmdysample; the others only by the integrations that use them.
CORE_DISTRIBUTIONS = ('torch', 'mmengine')
TASK_DISTRIBUTIONS = tuple(name for name in SUPPORTED_VERSIONS if name not in CORE_DISTRIBUTIONS)


class UnsupportedVersionError(ImportError):
    """An installed package outside :data:`SUPPORTED_VERSIONS` (the message says which
    version is installed and which are supported)."""


def _release(version: str) -> Tuple[int, ...]:
    """``'2.13.0+cpu'`` -> ``(2, 13, 0)``; ``'1.3.0rc1'`` -> ``(1, 3, 0)``."""
    match = re.match(r'\d+(\.\d+)*', version.strip())
    if not match:
        raise ValueError(f'cannot read the version {version!r}')
    return tuple(int(part) for part in match.group(0).split('.'))


def _requirement(distribution: str) -> str:
    lowest, first_unsupported = SUPPORTED_VERSIONS[distribution]
    return f'{distribution}>={lowest}' + (f',<{first_unsupported}' if first_unsupported
                                          else '')


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of ``distribution``, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(distribution: str, installed: Optional[str] = None) -> Optional[str]:
    """Check one package against :data:`SUPPORTED_VERSIONS`.

    Args:
        distribution: a key of :data:`SUPPORTED_VERSIONS` (``'torch'``, ``'mmengine'``,
            ``'mmcv'``, ``'mmdet'``, ``'mmsegmentation'``, ``'mmpretrain'``).
        installed: the version to check; by default the installed one.

    Returns:
        The installed version (``None`` when the package is not installed).

    Raises:
        UnsupportedVersionError: the version is below the supported range, or at or above
            its upper bound.
        ValueError: an unknown ``distribution``.
    """
    if distribution not in SUPPORTED_VERSIONS:
        raise ValueError(f'distribution must be one of {sorted(SUPPORTED_VERSIONS)}, '
                         f'got {distribution!r}')
    if installed is None:
        installed = installed_version(distribution)
        if installed is None:
            return None
    lowest, first_unsupported = SUPPORTED_VERSIONS[distribution]
    release = _release(installed)
    if release < _release(lowest) or (first_unsupported is not None
                                      and release >= _release(first_unsupported)):
        raise UnsupportedVersionError(
            f'mmdysample needs {_requirement(distribution)}, but {distribution} '
            f'{installed} is installed: install a supported version '
            f'(pip install "{_requirement(distribution)}"; supported versions: '
            f'docs/training.md)')
    return installed


def check_versions(*distributions: str, missing_ok: bool = True) -> Dict[str, Optional[str]]:
    """:func:`check_version` for each of ``distributions`` (default: all of
    :data:`SUPPORTED_VERSIONS`). A package that is not installed is skipped when
    ``missing_ok`` (the integrations that need it check again when they are imported) and
    an error otherwise. Returns ``{distribution: installed version or None}``."""
    versions = {}
    for distribution in distributions or tuple(SUPPORTED_VERSIONS):
        version = check_version(distribution)
        if version is None and not missing_ok:
            raise UnsupportedVersionError(f'mmdysample needs {_requirement(distribution)}, '
                                          f'but {distribution} is not installed')
        versions[distribution] = version
    return versions


def warn_if_unsupported(*distributions: str) -> None:
    """Like :func:`check_versions`, but a version out of range gives a warning (for
    packages that mmdysample patches only in places a user may not reach)."""
    for distribution in distributions:
        try:
            check_version(distribution)
        except UnsupportedVersionError as error:
            warnings.warn(str(error), stacklevel=2)


def check_installed() -> None:
    """The check ``import mmdysample`` runs before it imports torch: an unsupported or missing
    torch or mmengine stops the import (:class:`UnsupportedVersionError`, naming what is
    installed and what is needed); an installed task library (mmcv, mmdet, mmsegmentation,
    mmpretrain; used only by the integrations) out of range gives a warning; one that is not
    installed, nothing."""
    check_versions(*CORE_DISTRIBUTIONS, missing_ok=False)
    warn_if_unsupported(*TASK_DISTRIBUTIONS)
