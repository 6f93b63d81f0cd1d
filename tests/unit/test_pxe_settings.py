"""`golden pxe render` settings: the bad values (each refused with the option named), and what a
central server with replicas and a site cache render. Pure: templates only, no daemons."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from toolkit.boot.pxe import PxeSettings, check_settings, plan_render
from toolkit.core.errors import InputError

BASE = PxeSettings(out_dir=Path("/tmp/pxe-unit"), server_url="http://10.0.0.1", interface="eth0",
                   store_dir=Path("/srv/store"), subnet="10.0.0.0")

BAD = [
    ({"upstream": "replica-a"}, "--upstream must be HOST:PORT"),
    ({"replicas": ("10.0.0.2:9090", "10.0.0.2:9090; evil")}, "--upstream must be HOST:PORT"),
    ({"replicas": ("10.0.0.2:9090\nserver 6.6.6.6:80",)}, "--upstream must be HOST:PORT"),
    ({"replicas": ("127.0.0.1:9090",)}, "names the same replica twice"),
    ({"trusted_caches": ("0.0.0.0/0; allow all",)}, "--trusted-cache must be an IP address or network"),
    ({"trusted_caches": ("cache.site-1",)}, "--trusted-cache must be an IP address or network"),
    ({"cache_for": "https://central"}, "--cache-for must be the central boot server"),
    ({"cache_for": "http://central/boot"}, "--cache-for must be the central boot server"),
    ({"cache_for": "http://cen tral"}, "--cache-for must be the central boot server"),
    ({"cache_for": "http://central", "replicas": ("10.0.0.3:9090",)}, "belong to the central server's render"),
    ({"cache_for": "http://central", "trusted_caches": ("10.1.0.0/16",)}, "belong to the central server's render"),
    ({"cache_max_size": "lots"}, "--cache-max-size must be a size"),
    ({"cache_max_size": "10g; proxy_cache off"}, "--cache-max-size must be a size"),
]


@pytest.mark.parametrize("change, needle", BAD, ids=[str(c[0])[:50] for c in BAD])
def test_bad_settings_are_refused(change, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(")):
        check_settings(replace(BASE, **change))


def _site(s: PxeSettings) -> str:
    return next(f.content.decode() for f in plan_render(s) if f.path == "nginx-site.conf")


def test_central_with_replicas_and_trusted_caches():
    s = replace(BASE, upstream="10.0.0.1:9090", replicas=("10.0.0.2:9090", "[fd00::3]:9090"),
                trusted_caches=("10.20.0.0/16", "fd00:20::/48"))
    site = _site(s)
    for u in ("10.0.0.1:9090", "10.0.0.2:9090", "[fd00::3]:9090"):
        assert f"    server {u} max_fails=2 fail_timeout=10s;" in site
    assert "set_real_ip_from 10.20.0.0/16;" in site and "set_real_ip_from fd00:20::/48;" in site
    assert "alias /srv/store/" in site
    assert "golden-serve.service" in {f.path for f in plan_render(s)}


def test_central_without_caches_believes_no_forwarded_address():
    assert "set_real_ip_from" not in _site(BASE) and "real_ip_header" not in _site(BASE)


def test_site_cache_caches_artifacts_and_passes_boot_and_report_through():
    s = replace(BASE, cache_for="http://10.0.0.1:8080", cache_max_size="200g")
    site = _site(s)
    assert "server 10.0.0.1:8080;" in site and "max_size=200g" in site
    assert "alias" not in site  # no store of its own
    cached = site.split("location /boot/")[0]
    assert cached.count("proxy_cache golden_artifacts;") == 2 and "proxy_cache_lock on;" in cached
    tail = site.split("location /boot/")[1]
    assert tail.count("proxy_cache off;") == 3  # /boot/, /boot-refused and /report pass through uncached
    assert "golden-serve.service" not in {f.path for f in plan_render(s)}
    assert "server 10.0.0.1:80;" in _site(replace(BASE, cache_for="http://10.0.0.1"))
