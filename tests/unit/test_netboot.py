"""The netboot contract (2): kernel command line and iPXE script."""

from __future__ import annotations

import pytest

from toolkit.boot.netboot import kernel_cmdline, render_boot_script
from toolkit.core.errors import InputError

SHA = "ab" * 32
ARGS = dict(
    kernel_url="http://10.0.2.2:8080/b/vmlinuz",
    initrd_url="http://10.0.2.2:8080/b/initrd",
    squashfs_url="http://10.0.2.2:8080/b/rootfs.squashfs",
    sha256=SHA.upper(),
    build_id="b-1",
    image="base",
    mac="52:54:00:AA:BB:CC",
    token="nonce.ff00",
    report_url="http://10.0.2.2:8080/report",
)


def test_script_boots_kernel_and_initrd_with_the_contract_cmdline() -> None:
    script = render_boot_script(**ARGS, extra_args=("panic=10",))
    assert script.startswith("#!ipxe\n")
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    words = kernel.split()
    assert words[1] == ARGS["kernel_url"]
    assert words[2:] == ["initrd=initrd.img", "boot=live", f"fetch={ARGS['squashfs_url']}", f"golden.sha256={SHA}",
                         "golden.build=b-1", "golden.image=base", "golden.mac=52:54:00:aa:bb:cc",
                         "golden.token=nonce.ff00", f"golden.report={ARGS['report_url']}",
                         "console=ttyS0,115200", "panic=10"]
    assert f"initrd --name initrd.img {ARGS['initrd_url']}" in script
    assert "\nboot" in script


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sha256", "abc"),
        ("mac", "52:54:00:aa:bb"),
        ("squashfs_url", "ftp://x/rootfs.squashfs"),
        ("report_url", "http://x/report ${evil}"),
        ("token", ""),
        ("build_id", "two words"),
    ],
)
def test_bad_values_are_input_errors(field: str, value: str) -> None:
    args = {k: v for k, v in ARGS.items() if k not in ("kernel_url", "initrd_url")}
    args[field] = value
    with pytest.raises(InputError):
        kernel_cmdline(**args)


def test_bad_kernel_url_is_an_input_error() -> None:
    with pytest.raises(InputError, match="kernel_url"):
        render_boot_script(**{**ARGS, "kernel_url": "vmlinuz"})
