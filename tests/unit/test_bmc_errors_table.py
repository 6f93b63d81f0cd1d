"""The table turning pyghmi failures into typed errors (pure)."""

from __future__ import annotations

import socket

import pytest
from pyghmi.exceptions import IpmiException

from toolkit.bmc.base import BmcAuthError, BmcCommandError, BmcUnreachableError, BmcUnsupportedError
from toolkit.bmc.endpoint import BmcEndpoint
from toolkit.bmc.ipmi import classify_ipmi_error
from toolkit.core.secret import Secret

HOST = BmcEndpoint(name="r1n1", address="10.0.0.9", port=623, user="admin", password=Secret("hunter2"))


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (IpmiException("Incorrect password provided"), BmcAuthError),
        (IpmiException("Unauthorized name"), BmcAuthError),
        (IpmiException("timeout", 0xFFFF), BmcUnreachableError),
        (IpmiException("Session no longer connected"), BmcUnreachableError),
        (IpmiException(None), BmcUnreachableError),
        (socket.gaierror("Name or service not known"), BmcUnreachableError),
        (IpmiException("Invalid command", 0xC1), BmcUnsupportedError),
        (IpmiException("Command not supported in present state", 0xD5), BmcUnsupportedError),
        (IpmiException("Invalid data field in request", 0xCC), BmcCommandError),
        (IpmiException("Node Busy hunter2", 0xC0), BmcCommandError),
    ],
)
def test_classify(exc: Exception, kind: type) -> None:
    err = classify_ipmi_error(HOST, "power on", exc)
    assert type(err) is kind
    assert err.message.startswith("r1n1: BMC 10.0.0.9") and "\n" not in err.message
    assert "hunter2" not in err.message
    assert err.retryable == (kind is BmcUnreachableError)
