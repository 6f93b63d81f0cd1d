"""Hostile and careless image specs: each row is one bad project, checked through ``golden validate``.

Every row must exit 2 with one line naming the file (and the path inside it when there is one),
and never a traceback. Rows come from issue 11's review: injected DIB arguments, path-like names,
package lists that split, apt source lines smuggled in a mirror, extends cycles, and files that
used to crash the loader (binary, deep, huge numbers, huge files, alias bombs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.core.errors import SpecError
from toolkit.image.spec import ImageSpec, load_image, merge_layers, no_duplicates


def spec(**fields: object) -> str:
    """A spec for ``images/x.yaml`` with these fields; JSON is YAML, and it quotes anything."""
    return json.dumps({"name": "x", **fields})


def laughs() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    return "\n".join(lines) + "\n"


def chain(n: int) -> dict[str, str]:
    files = {f"c{i}.yaml": json.dumps({"name": f"c{i}", "extends": f"c{i + 1}"}) for i in range(n)}
    files[f"c{n}.yaml"] = json.dumps({"name": f"c{n}"})
    return files


ALLOW = "images/x.yaml: .drift_allowlist"
CASES: list[tuple[str, dict[str, str | bytes], str]] = [
    # 4. values that reached disk-image-create's argv or the chroot unchecked
    ("element-help", {"x.yaml": spec(elements=["--help"])}, "images/x.yaml: .elements[0]: expected an element name"),
    ("element-option", {"x.yaml": spec(elements=["-o/tmp/evil"])}, "images/x.yaml: .elements[0]: expected an element"),
    ("element-second", {"x.yaml": spec(elements=["vm", "-o/tmp/evil"])}, "images/x.yaml: .elements[1]: expected"),
    ("element-traversal", {"x.yaml": spec(elements=["../../etc"])}, "images/x.yaml: .elements[0]: expected an element"),
    ("element-slash", {"x.yaml": spec(elements=["a/b"])}, "images/x.yaml: .elements[0]: expected an element"),
    ("element-empty", {"x.yaml": spec(elements=[""])}, "images/x.yaml: .elements[0]: expected an element name"),
    ("element-space", {"x.yaml": spec(elements=["vm growroot"])}, "images/x.yaml: .elements[0]: expected an element"),
    ("element-too-long", {"x.yaml": spec(elements=["e" * 65])}, "images/x.yaml: .elements[0]: expected an element"),
    ("element-dupe", {"x.yaml": spec(elements=["vm", "vm"])}, "images/x.yaml: .elements: listed more than once: 'vm'"),
    ("elements-too-many", {"x.yaml": spec(elements=[f"e{i}" for i in range(101)])}, "images/x.yaml: .elements: "),
    ("package-comma", {"x.yaml": spec(packages=["curl,wget"])}, "images/x.yaml: .packages[0]: expected one Debian"),
    ("package-option", {"x.yaml": spec(packages=["-y"])}, "images/x.yaml: .packages[0]: expected one Debian package"),
    ("package-option-2", {"x.yaml": spec(packages=["--allow-unauthenticated"])}, "images/x.yaml: .packages[0]:"),
    ("package-space", {"x.yaml": spec(packages=["curl wget"])}, "images/x.yaml: .packages[0]: expected one Debian"),
    ("package-newline", {"x.yaml": spec(packages=["curl\nwget"])}, "images/x.yaml: .packages[0]: expected one Debian"),
    ("package-upper", {"x.yaml": spec(packages=["Curl"])}, "images/x.yaml: .packages[0]: expected one Debian package"),
    ("package-glob", {"x.yaml": spec(packages=["*"])}, "images/x.yaml: .packages[0]: expected one Debian package"),
    ("package-empty", {"x.yaml": spec(packages=[""])}, "images/x.yaml: .packages[0]: expected one Debian package"),
    ("package-bad-version", {"x.yaml": spec(packages=["curl=1,2"])}, "images/x.yaml: .packages[0]: expected one"),
    ("package-empty-version", {"x.yaml": spec(packages=["curl="])}, "images/x.yaml: .packages[0]: expected one"),
    ("package-dupe", {"x.yaml": spec(packages=["curl", "vim", "curl"])},
     "images/x.yaml: .packages: listed more than once: 'curl'"),
    ("mirror-newline", {"x.yaml": spec(base={"mirror": "http://m.invalid/debian\ndeb http://evil.invalid/ x main"})},
     "images/x.yaml: .base.mirror: a mirror URL has no whitespace or control characters"),
    ("mirror-space-option", {"x.yaml": spec(base={"mirror": "[trusted=yes] http://m.invalid/debian"})},
     "images/x.yaml: .base.mirror: a mirror URL has no whitespace"),
    ("mirror-tab", {"x.yaml": spec(base={"mirror": "http://m.invalid/\tdebian"})}, "images/x.yaml: .base.mirror:"),
    ("mirror-control", {"x.yaml": spec(base={"mirror": "http://m.invalid/\x1bdebian"})},
     "images/x.yaml: .base.mirror:"),
    ("mirror-scheme", {"x.yaml": spec(base={"mirror": "file:///etc"})},
     "images/x.yaml: .base.mirror: expected an http:// or https:// URL with a host"),
    ("mirror-no-host", {"x.yaml": spec(base={"mirror": "http:///debian"})}, "images/x.yaml: .base.mirror: expected an"),
    ("mirror-not-url", {"x.yaml": spec(base={"mirror": "mirror.invalid"})}, "images/x.yaml: .base.mirror: expected an"),
    ("mirror-bad-port", {"x.yaml": spec(base={"mirror": "http://m.invalid:99999/"})}, "images/x.yaml: .base.mirror:"),
    ("mirror-bad-ipv6", {"x.yaml": spec(base={"mirror": "http://[::1/"})}, "images/x.yaml: .base.mirror: not a URL"),
    ("mirror-credentials", {"x.yaml": spec(base={"mirror": "http://u:pw@m.invalid/debian"})},
     "images/x.yaml: .base.mirror: a mirror URL must not carry credentials"),
    ("security-mirror-newline", {"x.yaml": spec(base={"security_mirror": "http://m.invalid/\nx"})},
     "images/x.yaml: .base.security_mirror: a mirror URL has no whitespace"),
    ("release-long", {"x.yaml": spec(base={"release": "b" * 33})}, "images/x.yaml: .base.release:"),
    ("extends-cycle", {"a.yaml": json.dumps({"name": "a", "extends": "b"}),
                       "b.yaml": json.dumps({"name": "b", "extends": "a"})},
     "images/a.yaml: .extends: cycle a -> b -> a"),
    ("extends-self", {"x.yaml": spec(extends="x")}, "images/x.yaml: .extends: cycle x -> x"),
    ("extends-cycle-3", {"a.yaml": json.dumps({"name": "a", "extends": "c"}),
                         "b.yaml": json.dumps({"name": "b", "extends": "a"}),
                         "c.yaml": json.dumps({"name": "c", "extends": "b"})},
     "images/a.yaml: .extends: cycle a -> c -> b -> a"),
    ("extends-too-deep", chain(9), "images/c0.yaml: .extends: more than 8 layers"),
    ("extends-unknown", {"x.yaml": spec(extends="nope")}, "images/x.yaml: .extends: no image spec named 'nope'"),
    ("role-traversal", {"x.yaml": spec(roles=[{"name": "../r"}])}, "images/x.yaml: .roles[0].name: expected a role"),
    ("role-option", {"x.yaml": spec(roles=[{"name": "-r"}])}, "images/x.yaml: .roles[0].name: expected a role name"),
    ("role-empty", {"x.yaml": spec(roles=[{"name": ""}])}, "images/x.yaml: .roles[0].name: expected a role name"),
    ("unit-option", {"x.yaml": spec(checks=[{"name": "c", "unit_enabled": "--root=/"}])},
     "images/x.yaml: .checks[0].unit_enabled: expected a systemd unit name"),
    ("unit-active-space", {"x.yaml": spec(checks=[{"name": "c", "unit_active": "a b.service"}])},
     "images/x.yaml: .checks[0].unit_active: expected a systemd unit name"),
    ("check-file-escapes", {"x.yaml": spec(checks=[{"name": "c", "file": "/../../etc/passwd"}])},
     "images/x.yaml: .checks[0].file: expected an absolute path inside the image"),
    ("check-file-relative", {"x.yaml": spec(checks=[{"name": "c", "file": "etc/passwd"}])},
     "images/x.yaml: .checks[0].file: expected an absolute path"),
    ("check-command-nul", {"x.yaml": spec(checks=[{"name": "c", "command": "true\x00false"}])},
     "images/x.yaml: .checks[0].command: must not contain a NUL character"),
    ("check-command-huge", {"x.yaml": spec(checks=[{"name": "c", "command": "x" * 9000}])},
     "images/x.yaml: .checks[0].command:"),
    ("check-name-long", {"x.yaml": spec(checks=[{"name": "c" * 65, "command": "true"}])}, "images/x.yaml: .checks[0]"),
    ("http-path", {"x.yaml": spec(checks=[{"name": "c", "http": {"port": 80, "path": "x y"}}])},
     "images/x.yaml: .checks[0].http.path: expected a URL path"),
    ("http-status", {"x.yaml": spec(checks=[{"name": "c", "http": {"port": 80, "expect_status": 1000}}])},
     "images/x.yaml: .checks[0].http.expect_status:"),
    ("http-port", {"x.yaml": spec(checks=[{"name": "c", "http": {"port": 0}}])}, "images/x.yaml: .checks[0].http.port"),
    ("drift-allow-root", {"x.yaml": spec(drift_allowlist=["/"])}, f"{ALLOW}[0]: expected a path below /"),
    ("drift-allow-star", {"x.yaml": spec(drift_allowlist=["/*"])}, f"{ALLOW}[0]: expected a path below"),
    ("drift-allow-relative", {"x.yaml": spec(drift_allowlist=["var/lib"])}, f"{ALLOW}[0]: expected an absolute"),
    ("drift-allow-dotdot", {"x.yaml": spec(drift_allowlist=["/var/../etc"])}, f"{ALLOW}[0]: expected an absolute"),
    ("drift-allow-newline", {"x.yaml": spec(drift_allowlist=["/var/lib/x\n/etc"])}, f"{ALLOW}[0]: expected a path"),
    ("drift-allow-dupe", {"x.yaml": spec(drift_allowlist=["/srv", "/srv"])}, f"{ALLOW}: listed more than once"),
    ("dib-env-nul", {"x.yaml": spec(dib_env={"DIB_X": "a\x00b"})}, "images/x.yaml: .dib_env.DIB_X:"),
    ("dib-env-key", {"x.yaml": spec(dib_env={"PATH": "/tmp"})},
     "images/x.yaml: .dib_env: keys must look like DIB_NAME"),
    ("description-escape", {"x.yaml": spec(description="ok\x1b[2J")}, "images/x.yaml: .description: expected one line"),
    ("description-newline", {"x.yaml": spec(description="a\nb")}, "images/x.yaml: .description: expected one line"),
    ("description-huge", {"x.yaml": spec(description="d" * 1001)}, "images/x.yaml: .description:"),
    ("vars-nan", {"x.yaml": "name: x\nroles:\n  - name: r\n    vars: {x: .nan}\n"},
     "images/x.yaml: .roles[0].vars.x: numbers must be finite"),
    ("vars-inf", {"x.yaml": "name: x\nroles:\n  - name: r\n    vars: {x: [1, -.inf]}\n"},
     "images/x.yaml: .roles[0].vars.x[1]: numbers must be finite"),
    ("vars-overflow", {"x.yaml": "name: x\nroles:\n  - name: r\n    vars: {x: 1.0e+999}\n"},
     "images/x.yaml: .roles[0].vars.x: numbers must be finite"),
    ("vars-nul", {"x.yaml": spec(roles=[{"name": "r", "vars": {"x": "a\x00b"}}])},
     "images/x.yaml: .roles[0].vars.x: must not contain a NUL character"),
    ("unknown-key-newline", {"x.yaml": spec(**{"evil\nkey": 1})}, "images/x.yaml: ['evil\\nkey']: unknown key"),
    ("unknown-key-huge", {"x.yaml": spec(**{"k" * 1000: 1})}, "images/x.yaml: ['kkkkkkkkkk"),
    ("vars-key-huge", {"x.yaml": "name: x\nroles:\n  - name: r\n    vars: {" + "k" * 1000 + ": .nan}\n"},
     "images/x.yaml: .roles[0].vars['kkkk"),
    ("not-a-mapping", {"x.yaml": "[1, 2]\n"}, "images/x.yaml: .: expected a mapping at the top level"),
    # 5. files that used to end in a traceback
    ("not-utf8", {"x.yaml": b"name: x\ndescription: caf\xe9\n"},
     "images/x.yaml: not UTF-8 text (byte 0xe9 at offset 24)"),
    ("binary-png", {"x.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"},
     "images/x.yaml: not UTF-8 text (byte 0x89 at offset 0)"),
    ("binary-nul", {"x.yaml": b"name: x\n\x00\x01\x02"},
     "images/x.yaml: not valid YAML: character #x0000 is not allowed"),
    ("nested-5000-flow", {"x.yaml": "name: x\nroles: " + "[" * 5000 + "]" * 5000 + "\n"},
     "images/x.yaml: nested deeper than 64 levels"),
    ("nested-5000-mappings", {"x.yaml": "name: x\nv: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"},
     "images/x.yaml: nested deeper than 64 levels"),
    ("nested-block", {"x.yaml": "name: x\nv:\n" + "".join(" " * i + "- \n" for i in range(1, 100))},
     "images/x.yaml: nested deeper than 64 levels"),
    ("number-5000-digits", {"x.yaml": "name: x\nroles:\n  - name: r\n    vars: {n: " + "9" * 5000 + "}\n"},
     "images/x.yaml:4:15: number longer than 64 characters"),
    ("number-5000-digits-port", {"x.yaml": spec()[:-1]
                                 + ', "checks": [{"name": "c", "http": {"port": ' + "1" * 5000 + "}}]}"},
     "images/x.yaml:1:57: number longer than 64 characters"),
    ("file-too-large", {"x.yaml": "name: x\n" + "#" * (1 << 20)}, "images/x.yaml: larger than 1 MiB"),
    ("alias-bomb", {"x.yaml": "name: x\n" + laughs()}, "images/x.yaml:7:5: more than 500000 values"),
    ("alias-recursive", {"x.yaml": "name: x\nv: &a [*a]\n"}, "images/x.yaml:2:4: an alias refers to the collection"),
    ("yaml-syntax", {"x.yaml": "name: x\nroles: [\n"}, "images/x.yaml:3:1: not valid YAML"),
    ("two-documents", {"x.yaml": "name: x\n---\nname: y\n"}, "images/x.yaml:2:1: not valid YAML: expected a single"),
    ("not-a-file", {"x.yaml/": ""}, "images/x.yaml: not a regular file"),
    # issue 16: builder
    ("builder-unknown", {"x.yaml": spec(builder="chroot")}, "images/x.yaml: .builder: Input should be 'dib' or"),
    ("builder-packer-no-parent", {"x.yaml": spec(builder="packer")},
     "images/x.yaml: .builder: packer boots the root of a DIB-baked parent: set extends"),
    ("builder-packer-elements", {"p.yaml": json.dumps({"name": "p"}),
                                 "x.yaml": spec(builder="packer", extends="p", elements=["vm"])},
     "images/x.yaml: .elements: a builder: packer layer takes no elements"),
    ("builder-packer-dib-env", {"p.yaml": json.dumps({"name": "p"}),
                                "x.yaml": spec(builder="packer", extends="p", dib_env={"DIB_X": "1"})},
     "images/x.yaml: .dib_env: a builder: packer layer takes no dib_env"),
]


def _project(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("[]\n")
    images = tmp_path / "images"
    images.mkdir()
    for name, body in files.items():
        if name.endswith("/"):
            (images / name).mkdir()
        elif isinstance(body, bytes):
            (images / name).write_bytes(body)
        else:
            (images / name).write_text(body, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("files, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_spec_is_one_line_with_exit_2(tmp_path, capsys, files, needle):
    project = _project(tmp_path, files)
    assert main(["--project", str(project), "validate"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert needle in err, err
    lines = [line for line in err.splitlines() if needle in line]
    assert len(lines[0]) < 400, "a problem is one short line, however large the bad value"


def test_case_ids_are_unique():
    assert len({c[0] for c in CASES}) == len(CASES)


def test_load_image_reports_the_cycle_too(tmp_path):
    project = _project(tmp_path, {"a.yaml": json.dumps({"name": "a", "extends": "b"}),
                                  "b.yaml": json.dumps({"name": "b", "extends": "a"})})
    with pytest.raises(SpecError, match=r"images/b.yaml: \.extends: cycle a -> b -> a"):
        load_image("a", project / "images", project / "roles")


def test_good_names_still_pass():
    ImageSpec.model_validate({
        "name": "x", "elements": ["vm", "dhcp-all-interfaces", "cloud-init.d", "a_b"],
        "packages": ["g++", "libstdc++6", "python3.11", "vim=2:9.0.1378-2", "linux-image-amd64=6.1.0-18+deb12u1~bpo"],
        "base": {"mirror": "https://deb.example.org:8443/debian/", "security_mirror": "http://[::1]/debian-security"},
        "checks": [{"name": "c", "unit_enabled": "getty@tty1.service"}, {"name": "f", "file": "/etc/os-release"}],
    })


def test_duplicate_check_is_linear():
    packages = [f"pkg{i}" for i in range(40_000)] + ["pkg7"]
    started = time.perf_counter()
    with pytest.raises(ValueError, match="listed more than once: 'pkg7'"):
        no_duplicates(packages)
    with pytest.raises(ValueError, match="listed more than once: 'pkg7'"):
        ImageSpec.model_validate({"name": "x", "packages": packages})
    assert time.perf_counter() - started < 2.0  # was 48 s with list.count per entry


def test_merge_over_the_limit_is_a_spec_error():
    parent = ImageSpec.model_validate({"name": "a", "packages": [f"p{i}" for i in range(30_000)]})
    child = ImageSpec.model_validate({"name": "b", "extends": "a", "packages": [f"q{i}" for i in range(30_000)]})
    with pytest.raises(SpecError, match=r"images/b.yaml: \.packages: .*merged with a"):
        merge_layers(child, parent, "images/b.yaml")


@pytest.mark.parametrize("body, needle", [
    (b"mirror: caf\xe9\n", "golden.yaml: not UTF-8 text (byte 0xe9 at offset 11)"),
    (b"mirror: " + b"[" * 5000, "golden.yaml: nested deeper than 64 levels"),
    (b"home: [\n", "golden.yaml:2:1: not valid YAML"),
])
def test_golden_yaml_is_read_within_limits_too(tmp_path, capsys, body, needle):
    project = _project(tmp_path, {"x.yaml": spec()})
    (project / "golden.yaml").write_bytes(body)
    assert main(["--project", str(project), "validate"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("text, error", [
    ("homee: /tmp\n", "golden.yaml:1: .homee: unknown key (did you mean home?)"),
    ("lab:\n  bootURL: http://x\n", "golden.yaml:2: .lab.bootURL: unknown key (did you mean boot_url?)"),
    ("home: [1, 2]\n", "golden.yaml:1: .home: Input should be a valid string"),
    ("promotion: yes\n", "golden.yaml:1: .promotion: Input should be a valid dictionary"),
    # gate names are checked by validate, not first by promote
    ("promotion:\n  prod:\n    lab_boot: true\n    soke: 24h\n",
     "golden.yaml:4: .promotion.prod.soke: unknown key (did you mean soak?)"),
    ("promotion:\n  prod: {in_synk: 3}\n",
     "golden.yaml:2: .promotion.prod.in_synk: unknown key (did you mean in_sync?)"),
    ("promotion:\n  prod: {soak: a while}\n", "golden.yaml:2: .promotion.prod.soak: soak must be a duration"),
    ("stale:\n  max_age: 14d\n  max_behnd: 2\n",
     "golden.yaml:3: .stale.max_behnd: unknown key (did you mean max_behind?)"),
    ("packer:\n  cpus: 0\n", "golden.yaml:2: .packer.cpus: Input should be greater than or equal to 1"),
    ("trust:\n  public_key: [central.pub]\n",
     "golden.yaml:2: .trust.public_key: unknown key (did you mean public_keys?)"),
    ("trust:\n  public_keys: central.pub\n", "golden.yaml:2: .trust.public_keys: Input should be a valid list"),
    # rollout: is checked by toolkit.rollout.hooks (its full table: tests/unit/test_rollout_hooks.py)
    ("rollout:\n  hooks:\n    - hosts: web\n      drain: playbooks/nope.yml\n",
     "golden.yaml: .rollout.hooks[0].drain: no playbook playbooks/nope.yml"),
    ("rollout:\n  hooks:\n    - hosts: web\n      max_unavailable: 150%\n", "between 0% and 100%, got '150%'"),
    ("rollout:\n  hooks:\n    - hosts: web\n      max_unavailable: 1\n      timeout: 90\n",
     ".rollout.hooks[0].timeout: Input should be a valid string"),
])
def test_golden_yaml_is_strict(tmp_path, capsys, text, error) -> None:
    from toolkit.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "roles").mkdir()
    (tmp_path / "golden.yaml").write_text(text)
    assert main(["--project", str(tmp_path), "validate"]) == 2
    err = capsys.readouterr().err
    assert error in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_golden_yaml_sections_of_other_stages_are_accepted(tmp_path, capsys) -> None:
    """``rollout:`` (drain/verify hooks) is checked by its owner, toolkit.rollout.hooks (its bad inputs are
    tests/unit/test_rollout_hooks.py's table); a good one passes beside the other sections."""
    from toolkit.cli import main

    (tmp_path / "images").mkdir()
    (tmp_path / "roles").mkdir()
    (tmp_path / "drain.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "golden.yaml").write_text("rollout:\n  hooks: [{hosts: web, drain: drain.yml, undrain: drain.yml}]\n"
                                          "promotion:\n  prod: {soak: 24h}\n")
    assert main(["--project", str(tmp_path), "validate"]) == 0, capsys.readouterr().err
