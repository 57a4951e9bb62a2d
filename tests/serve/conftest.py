from __future__ import annotations

import pytest

from tests.serve.helpers import tiny_gguf


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    """The tiny GGUF the serving tests run (built per module, as the modules that define their own do)."""
    return tiny_gguf(tmp_path_factory.mktemp("tiny"))
