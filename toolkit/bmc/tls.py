"""A BMC's TLS certificate checked against the CA the inventory names (``BmcEndpoint.ca_file``).

pyghmi's Redfish client takes a ``verifycallback``: it completes the handshake without checking
anything, then calls it with the peer's leaf certificate (DER bytes) and refuses the connection
unless it returns True. ``ca_verifier`` builds that callback: the chain must lead to a
certificate in the CA file and the certificate must name the address we dialled (IP or DNS
name), checked by ``cryptography``'s X.509 verifier (pyghmi's own dependency).
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification

from toolkit.bmc.endpoint import BmcEndpoint, BmcProtocol
from toolkit.core.errors import InputError

log = logging.getLogger("golden.bmc")
_NAMED = 5  # hosts a warning names before it says "and N more"


class CaFileError(ValueError):
    """A CA file golden cannot use: ``reason`` completes "<path> ...", ``hint`` says what to set."""

    def __init__(self, path: str, reason: str, hint: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path, self.reason, self.hint = path, reason, hint


def read_ca(ca_file: str) -> list[x509.Certificate]:
    """The CA certificates in ``ca_file`` (PEM); CaFileError when it is missing, unreadable or not PEM.
    The one check of a CA file: the inventory runs it when loading, the Redfish client when connecting."""
    try:
        return x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    except OSError as exc:
        raise CaFileError(ca_file, f"cannot be read: {exc.strerror}",
                          "set bmc_ca_file to a readable PEM file") from None
    except ValueError:
        raise CaFileError(ca_file, "holds no PEM certificate",
                          "set bmc_ca_file to the CA certificate(s) in PEM format") from None


def load_ca(name: str, ca_file: str) -> verification.Store:
    """The CA certificates in ``ca_file`` as a trust store; InputError naming the host when it is unusable."""
    try:
        return verification.Store(read_ca(ca_file))
    except CaFileError as exc:
        raise InputError(f"{name}: the BMC CA file {exc}", hint=exc.hint) from None


def _subject(address: str) -> verification.Subject:
    try:
        return verification.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return verification.DNSName(address)


def _reason(exc: Exception) -> str:
    # cryptography says "validation failed: candidates exhausted: ..." when no chain leads to the CA
    text = str(exc).removeprefix("validation failed: ")
    return "no chain leads to that CA" if text.startswith("candidates exhausted") else text


def ca_verifier(name: str, address: str, ca_file: str) -> Callable[[bytes], bool]:
    """pyghmi's verifycallback: True for a certificate issued under ``ca_file`` for ``address``.

    A refusal raises ``ssl.SSLCertVerificationError`` (with cryptography's reason), which the
    Redfish error table turns into "certificate not trusted"; retrying cannot help.
    """
    verifier = verification.PolicyBuilder().store(load_ca(name, ca_file)).build_server_verifier(_subject(address))

    def check(der: bytes) -> bool:
        try:
            verifier.verify(x509.load_der_x509_certificate(der), [])
        except (verification.VerificationError, ValueError) as exc:
            raise ssl.SSLCertVerificationError(f"not issued by {ca_file} for {address}: {_reason(exc)}") from None
        return True

    return check


def unverified(endpoints: Iterable[BmcEndpoint]) -> list[str]:
    """The Redfish hosts whose certificates go unchecked (the inventory says ``bmc_verify: false``)."""
    return [e.name for e in endpoints if e.protocol == BmcProtocol.REDFISH and not e.verify_tls]


def warn_unverified(endpoints: Iterable[BmcEndpoint]) -> list[str]:
    """One warning for the whole run (never one per host) when some Redfish BMCs are not verified;
    the names it warned about."""
    names = unverified(endpoints)
    if names:
        more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
        log.warning("not verifying the TLS certificate of %d Redfish BMC(s) (bmc_verify: false): %s%s",
                    len(names), ", ".join(names[:_NAMED]), more)
    return names
