"""A BMC's TLS certificate checked against the CA the inventory names (``BmcEndpoint.ca_file``).

pyghmi's Redfish client takes a ``verifycallback``: it completes the handshake without checking
anything, then calls it with the peer's leaf certificate (DER bytes) and refuses the connection
unless it returns True. ``ca_verifier`` builds that callback: the chain must lead to a
certificate in the CA file and the certificate must name the address we dialled (IP or DNS
name), checked by ``cryptography``'s X.509 verifier (pyghmi's own dependency).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification

from toolkit.core.errors import InputError


def load_ca(name: str, ca_file: str) -> verification.Store:
    """The CA certificates in ``ca_file`` (PEM); InputError naming the host when it is unusable."""
    try:
        certs = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    except OSError as exc:
        raise InputError(f"{name}: cannot read the BMC CA file {ca_file}: {exc.strerror}",
                         hint="set bmc_ca_file to a readable PEM file") from None
    except ValueError:
        raise InputError(f"{name}: the BMC CA file {ca_file} holds no PEM certificate",
                         hint="set bmc_ca_file to the CA certificate(s) in PEM format") from None
    return verification.Store(certs)


def _subject(address: str) -> verification.Subject:
    try:
        return verification.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return verification.DNSName(address)


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
            raise ssl.SSLCertVerificationError(f"not issued by {ca_file} for {address}: {exc}") from None
        return True

    return check
