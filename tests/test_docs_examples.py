"""The examples of docs/testing.md run as written: every ```python block, in order, in one namespace, in an
empty working directory; a failing block fails the test naming its line in the page."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the block's first code line in the page, code) for every ```python block."""
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in BLOCK.finditer(text)]


def test_the_page_has_examples():
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    assert all(code.strip() for _, code in blocks)


def test_the_testing_page_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_testing_examples"}
    for line, code in python_blocks(PAGE.read_text(encoding="utf-8")):
        # compiled with blank lines in front, so a traceback's line numbers are the page's
        compiled = compile("\n" * (line - 1) + code, str(PAGE), "exec")
        failure = None
        try:
            exec(compiled, namespace)
        except Exception:  # any failure of an example fails the test, naming the block's line
            failure = traceback.format_exc()
        if failure is not None:
            pytest.fail(f"the example at {PAGE.name}:{line} failed:\n{failure}", pytrace=False)
