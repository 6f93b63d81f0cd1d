"""The network boot of a golden node: the kernel command line and the iPXE script that carry it.

Contract with the image (roles/netboot, roles/golden_agent): live-boot downloads the squashfs
named by ``fetch=``, the initramfs refuses it unless its sha256 equals ``golden.sha256=``, and the
agent reports to ``golden.report=`` with ``golden.build``, ``golden.image``, ``golden.mac`` and
``golden.token``. Everything here is pure: it returns text, it never fetches or boots anything.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import jinja2

from toolkit.core.errors import InputError
from toolkit.core.mac import normalize_mac

TEMPLATE = Path(__file__).resolve().parent / "templates" / "boot.ipxe.j2"
UKI_TEMPLATE = TEMPLATE.with_name("boot-uki.ipxe.j2")  # Secure Boot hosts: one signed image
REFUSED_PATH = "/boot-refused"  # golden serve's URL the UKI script fetches when the firmware refused the image
SERIAL_CONSOLE = "console=ttyS0,115200"

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Kernel command line words are split on whitespace and iPXE expands ${...}: keep values plain.
_PLAIN = re.compile(r"[^\s${}\"']+")


def _check_url(name: str, url: str) -> str:
    if not url.startswith(("http://", "https://")) or not _PLAIN.fullmatch(url):
        raise InputError(f"{name} must be an http(s) URL without spaces, quotes or '$', got {url!r}")
    return url


def _check_plain(name: str, value: str) -> str:
    if not value or not _PLAIN.fullmatch(value):
        raise InputError(f"{name} must be a non-empty value without spaces, quotes or '$', got {value!r}")
    return value


def kernel_cmdline(
    squashfs_url: str,
    sha256: str,
    build_id: str,
    image: str,
    mac: str,
    token: str,
    report_url: str,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The kernel command line words of a golden netboot (contract 2), validated."""
    digest = sha256.lower()
    if not _SHA256.fullmatch(digest):
        raise InputError(f"sha256 must be 64 hex digits, got {sha256!r}")
    mac = normalize_mac(mac)
    words = [
        "boot=live",
        f"fetch={_check_url('squashfs_url', squashfs_url)}",
        f"golden.sha256={digest}",
        f"golden.build={_check_plain('build_id', build_id)}",
        f"golden.image={_check_plain('image', image)}",
        f"golden.mac={mac}",
        f"golden.token={_check_plain('token', token)}",
        f"golden.report={_check_url('report_url', report_url)}",
        SERIAL_CONSOLE,
    ]
    for arg in extra_args:
        words.append(_check_plain("extra argument", arg))
    return words


@functools.cache
def _template(path: Path = TEMPLATE) -> jinja2.Template:
    """A boot template, compiled once per process: compiling costs ~70x a render, on every /boot."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)  # noqa: S701 (not HTML)
    return env.from_string(path.read_text(encoding="utf-8"))


def render_boot_script(
    kernel_url: str,
    initrd_url: str,
    squashfs_url: str,
    sha256: str,
    build_id: str,
    image: str,
    mac: str,
    token: str,
    report_url: str,
    extra_args: Sequence[str] = (),
) -> str:
    """The iPXE script that boots ``build_id`` of ``image`` on the node with ``mac``."""
    words = kernel_cmdline(squashfs_url, sha256, build_id, image, mac, token, report_url, extra_args)
    return _template().render(
        kernel_url=_check_url("kernel_url", kernel_url),
        initrd_url=_check_url("initrd_url", initrd_url),
        cmdline=" ".join(words),
        build_id=build_id,
        image=image,
        mac=mac.lower(),
    )


def render_uki_script(uki_url: str, refused_url: str, words: Sequence[str], build_id: str, image: str,
                      mac: str) -> str:
    """The iPXE script that hands a Secure Boot node the signed UKI of ``build_id`` with the command line
    ``words`` (from kernel_cmdline), and reports a firmware refusal to ``refused_url`` (an http(s) URL with
    a query, to which iPXE appends ``&errno=``)."""
    return _template(UKI_TEMPLATE).render(
        uki_url=_check_url("uki_url", uki_url), refused_url=_check_url("refused_url", refused_url),
        cmdline=" ".join(words), build_id=build_id, image=image, mac=mac.lower())
