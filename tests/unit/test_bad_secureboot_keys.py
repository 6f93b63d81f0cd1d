"""Bad Secure Boot key material: each case one InputError naming the file and what to fix, never its content."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core.config import Settings
from toolkit.core.errors import InputError
from toolkit.trust import secureboot

KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEvSECRETSECRET\n-----END PRIVATE KEY-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"


def _settings(tmp_path: Path, section: dict | None) -> Settings:
    extra = {"secure_boot": section} if section is not None else {}
    return Settings(project=tmp_path, home=tmp_path / "home", cache=tmp_path / "cache", extra=extra)


def _files(tmp_path: Path, key: bytes = KEY, mode: int = 0o600, cert: bytes = CERT) -> None:
    (tmp_path / "db.key").write_bytes(key)
    (tmp_path / "db.key").chmod(mode)
    (tmp_path / "db.crt").write_bytes(cert)


CASES = [
    ("missing key", {"db_key": "nope.key", "db_cert": "db.crt"}, {}, "nope.key does not exist"),
    ("only the key", {"db_key": "db.key"}, {}, "needs both db_key and db_cert"),
    ("readable by others", {"db_key": "db.key", "db_cert": "db.crt"}, {"mode": 0o644}, "readable by others"),
    ("group readable", {"db_key": "db.key", "db_cert": "db.crt"}, {"mode": 0o640}, "chmod 600"),
    ("key is a certificate", {"db_key": "db.key", "db_cert": "db.crt"}, {"key": CERT}, "not a PEM private key"),
    ("cert is a key", {"db_key": "db.key", "db_cert": "db.crt"}, {"cert": KEY}, "not a PEM certificate"),
    ("missing cert", {"db_key": "db.key", "db_cert": "gone.crt"}, {}, "gone.crt does not exist"),
    ("key is a folder", {"db_key": ".", "db_cert": "db.crt"}, {}, "is not a file"),
]


@pytest.mark.parametrize("section, files, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_db_key_configuration(tmp_path: Path, section: dict, files: dict, expect: str) -> None:
    _files(tmp_path, **files)
    with pytest.raises(InputError) as info:
        secureboot.db_key(_settings(tmp_path, section))
    text = f"{info.value.message} {info.value.hint or ''}"
    assert expect in text and info.value.exit_code == 2
    assert "SECRET" not in text


def test_unknown_field_in_the_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="db_keyfile"):
        secureboot.db_key(_settings(tmp_path, {"db_keyfile": "x"}))


def test_site_key_is_used_over_no_hierarchy(tmp_path: Path) -> None:
    _files(tmp_path)
    got = secureboot.db_key(_settings(tmp_path, {"db_key": "db.key", "db_cert": str(tmp_path / "db.crt")}))
    assert got == secureboot.DbKey(tmp_path / "db.key", tmp_path / "db.crt")


def test_no_keys_means_no_signing(tmp_path: Path) -> None:
    assert secureboot.db_key(_settings(tmp_path, None)) is None


def test_a_hierarchy_with_a_loose_key_is_refused(tmp_path: Path) -> None:
    s = _settings(tmp_path, None)
    folder = secureboot.keys_dir(s)
    folder.mkdir(parents=True)
    (folder / secureboot.OWNER_FILE).write_text("6f4f0a3c-0000-4000-8000-000000000000\n")
    for name in secureboot.HIERARCHY:
        (folder / f"{name}.key").write_bytes(KEY)
        (folder / f"{name}.key").chmod(0o600)
        (folder / f"{name}.crt").write_bytes(CERT)
    assert secureboot.db_key(s) == secureboot.DbKey(folder / "db.key", folder / "db.crt")
    (folder / "KEK.key").chmod(0o604)
    with pytest.raises(InputError, match=r"KEK key .* readable by others"):
        secureboot.db_key(s)
