"""Every relative link and image in README.md and docs/*.md resolves, anchors included."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
FENCE = re.compile(r'^```.*?^```', re.M | re.S)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r'`', '', heading.strip().lower())
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path: Path) -> set:
    text = FENCE.sub('', path.read_text(encoding='utf-8'))
    return {github_anchor(m.group(1)) for m in re.finditer(r'^#+\s+(.*)$', text, re.M)}


def broken_links(path: Path) -> list:
    """The links of ``path`` (outside code blocks) that do not resolve, as strings."""
    text = FENCE.sub('', path.read_text(encoding='utf-8'))
    broken = []
    for target in LINK.findall(text):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition('#')
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f'{target} (no such file {resolved})')
        elif anchor and resolved.suffix == '.md' and anchor not in anchors(resolved):
            broken.append(f'{target} (no heading #{anchor} in {resolved.name})')
    return broken


DOC_FILES = [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))


@pytest.mark.parametrize('path', DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_docs_pages_exist_and_readme_is_short():
    names = {p.name for p in DOC_FILES}
    for page in ('install.md', 'upsamplers.md', 'integrations.md', 'training.md', 'tools.md',
                 'performance.md', 'demo.md', 'design.md'):
        assert page in names
    assert len((REPO / 'README.md').read_text(encoding='utf-8').splitlines()) <= 200


def test_checker_finds_broken_links(tmp_path):
    (tmp_path / 'other.md').write_text('# A Heading: with `code`\n')
    page = tmp_path / 'page.md'
    page.write_text('[ok](other.md) [ok](other.md#a-heading-with-code) [ok](#title)\n'
                    '# Title\n[bad](missing.md) [bad](other.md#nope) ![bad](img.png)\n'
                    '```\n[in code](ignored.md)\n```\n[web](https://example.com/x)\n')
    assert broken_links(page) == [
        f'missing.md (no such file {tmp_path / "missing.md"})',
        'other.md#nope (no heading #nope in other.md)',
        f'img.png (no such file {tmp_path / "img.png"})',
    ]
