"""The BMC layer honours verify_tls and ca_file, and the pyghmi internals we patch still exist."""

from __future__ import annotations

import datetime
import importlib
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from toolkit.bmc import redfish
from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.bmc.tls import ca_verifier
from toolkit.core.errors import InputError
from toolkit.core.secret import Secret

NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, ip: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("bmc")).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def ca_file(tmp_path: Path) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert, key = _ca("golden test BMC CA")
    path = tmp_path / "bmc-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def test_a_certificate_from_the_ca_for_the_address_is_accepted(ca_file: Any) -> None:
    path, ca, key = ca_file
    assert ca_verifier("node1", "10.0.0.5", str(path))(_leaf(ca, key, "10.0.0.5")) is True


def test_another_ca_or_another_address_is_refused(ca_file: Any) -> None:
    path, ca, key = ca_file
    check = ca_verifier("node1", "10.0.0.5", str(path))
    other, other_key = _ca("someone else")
    with pytest.raises(ssl.SSLCertVerificationError):
        check(_leaf(other, other_key, "10.0.0.5"))
    with pytest.raises(ssl.SSLCertVerificationError):
        check(_leaf(ca, key, "10.0.0.6"))  # issued for another BMC
    with pytest.raises(ssl.SSLCertVerificationError):
        check(b"not a certificate")


def test_an_unusable_ca_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"the BMC CA file .* cannot be read"):
        ca_verifier("node1", "10.0.0.5", str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(InputError, match="holds no PEM certificate"):
        ca_verifier("node1", "10.0.0.5", str(tmp_path / "junk.pem"))


def _endpoint(**over: Any) -> BmcEndpoint:
    return BmcEndpoint("node1", "10.0.0.5", 443, BmcProtocol.REDFISH, "admin", Secret("pw"), **over)


def test_redfish_passes_pyghmi_the_right_callback(ca_file: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path, ca, key = ca_file
    assert redfish.certificate_check(_endpoint()) is None  # verified by default: pyghmi, system CAs + host name
    assert redfish.certificate_check(_endpoint(verify_tls=False))(b"anything") is True  # type: ignore[misc]
    # bmc_verify: false wins over a CA file a group gives all its hosts
    assert redfish.certificate_check(_endpoint(verify_tls=False, ca_file=str(path)))(b"x") is True  # type: ignore[misc]
    seen: dict[str, Any] = {}

    class FakeCommand:
        def __init__(self, bmc: str, user: str, password: str, verifycallback: Any = None, port: int = 0) -> None:
            seen.update(bmc=bmc, verifycallback=verifycallback, port=port)

    from pyghmi.redfish import command as rf_command

    monkeypatch.setattr(rf_command, "Command", FakeCommand)
    redfish.RedfishClient(_endpoint(ca_file=str(path)))._connect()
    assert seen["bmc"] == "10.0.0.5" and seen["port"] == 443
    assert seen["verifycallback"](_leaf(ca, key, "10.0.0.5")) is True
    with pytest.raises(ssl.SSLCertVerificationError):
        seen["verifycallback"](_leaf(ca, key, "10.9.9.9"))


def test_the_certificate_error_is_classified_as_untrusted() -> None:
    err = redfish.classify_redfish_error(_endpoint(), "login", ssl.SSLCertVerificationError("not issued by x"))
    assert "not trusted" in err.message and not err.retryable


# What toolkit/bmc/pyghmi_fixes.py and the Redfish client reach into: private names of the pinned pyghmi.
PRIVATE = [
    ("pyghmi.ipmi.private.session", "_io_sendto"),
    ("pyghmi.ipmi.private.session", "_io_recvfrom"),
    ("pyghmi.ipmi.private.session", "_io_wait"),
    ("pyghmi.ipmi.private.session", "ioqueue"),
    ("pyghmi.ipmi.private.session", "selectdeadline"),
    ("pyghmi.ipmi.private.session", "iosockets"),
    ("pyghmi.ipmi.private.session", "myself"),
    ("pyghmi.ipmi.private.session", "_monotonic_time"),
    ("pyghmi.ipmi.private.session", "WAITING_SESSIONS"),
    ("pyghmi.ipmi.private.session", "KEEPALIVE_SESSIONS"),
    ("pyghmi.ipmi.private.session", "Session.initting_sessions"),
    ("pyghmi.util.webclient", "SecureHTTPConnection"),
]


@pytest.mark.parametrize(("module", "attr"), PRIVATE, ids=[f"{m}.{a}" for m, a in PRIVATE])
def test_the_pyghmi_internals_we_patch_still_exist(module: str, attr: str) -> None:
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        assert hasattr(obj, part), (f"pyghmi no longer has {module}.{attr}: toolkit/bmc/pyghmi_fixes.py patches it; "
                                    "re-check the fix against the new pyghmi before moving the pin in pyproject.toml")
        obj = getattr(obj, part)


def test_redfish_command_still_keeps_a_url_cache() -> None:
    import inspect

    from pyghmi.redfish import command as rf_command

    init = inspect.getsource(rf_command.Command.__init__)
    for attr in ("self._urlcache", "self.sysurl"):  # RedfishClient.get_bootdev clears one entry of the cache
        assert attr in init, f"pyghmi's Redfish Command no longer sets {attr}: see toolkit/bmc/redfish.py get_bootdev"
