import os
import stat

import pytest

from wattlm.errors import InvalidInputError
from wattlm.fileio import append_lines, atomic_write_text, check_writable


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    atomic_write_text(p, "new\n")
    assert p.read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert [f.name for f in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_append_whole_lines(tmp_path):
    p = tmp_path / "log.csv"
    append_lines(p, ["a,b", "1,2\n"])
    append_lines(p, ["3,4"])
    assert p.read_text() == "a,b\n1,2\n3,4\n"


def test_check_writable_rejects_directories_and_missing_folders(tmp_path):
    with pytest.raises(InvalidInputError, match="is a directory"):
        check_writable(tmp_path, "--json")
    with pytest.raises(InvalidInputError, match="does not exist"):
        check_writable(tmp_path / "nope" / "x.json", "--json")
    assert check_writable(tmp_path / "x.json", "--json") == tmp_path / "x.json"
