"""``--password-file`` (:func:`homewarden.cli._read_password_file`): a symlink is refused with
words that say why, not the raw ``ELOOP`` of ``O_NOFOLLOW``."""

from __future__ import annotations

from pathlib import Path

import pytest

from homewarden.cli import _read_password_file
from homewarden.errors import InvalidRequestError


def test_a_symlinked_password_file_is_refused_saying_why(tmp_path: Path) -> None:
    real = tmp_path / "pw"
    real.write_text("hunter22\n")
    real.chmod(0o600)
    assert _read_password_file(real) == "hunter22"
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InvalidRequestError) as err:
        _read_password_file(link)
    message = str(err.value)
    assert "symbolic link" in message
    assert "others can read" in message
    assert "chmod 600" in message
    assert "Too many levels" not in message
