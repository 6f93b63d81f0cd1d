# TEMPORARY (helper 3 local run against another helper's finished bake); deleted after the run.
import pytest

from tests.e2e.test_publish_boot import test_boot_through_rendered_dnsmasq_and_nginx, test_publish_boot_promote_reassign_rollback, lab  # noqa
from toolkit.store import Store


@pytest.fixture
def baked_base():
    return Store(__import__("pathlib").Path("/tmp/nb/home/store")).get("base", "3e703cd68ead3a24")
