"""Running the operators' playbooks through the real ansible-runner and ansible-playbook (toolkit/core/playbook.py).

A hook that hangs is killed at its timeout with everything it started (Ansible's workers call
setsid(), so a process-group kill alone would leave the hung task running); a failing task is
named with its message; a play that matches no host is a failure; the extra vars arrive; a
vault-encrypted variable opens with the password file golden was given, which never reaches argv.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.core.playbook import PlaybookRun, run_playbook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

INVENTORY = """\
all:
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  hosts:
    node1: {ansible_connection: local}
    node2: {ansible_connection: local}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    return tmp_path


def _run(project: Path, book: str, text: str, timeout: float = 60, **kw: object) -> tuple:
    path = project / book
    path.write_text(text)
    record = project / "records" / book.replace(".yml", "")
    return run_playbook(PlaybookRun(playbook=path, project=project, inventory=[str(project / "inventory.yml")],
                                    limit="node1", extravars={"golden_host": "node1", "golden_build": "b2",
                                                              "golden_attempt": 1},
                                    record=record, timeout_s=timeout, **kw)), record  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_hung_hook_is_killed_at_its_timeout_with_everything_it_started(project: Path) -> None:
    pidfile = project / "pid"
    started = time.monotonic()
    res, _ = _run(project, "hang.yml", f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Wait for a load balancer that never answers
      ansible.builtin.shell: echo $$ > {pidfile}; exec sleep 600
""", timeout=8)
    took = time.monotonic() - started
    assert res.status == "timeout" and not res.ok
    assert res.why() == ("did not finish within its timeout (killed with everything it started; last task "
                         "'Wait for a load balancer that never answers')")
    assert took < 8 + 6, took  # the deadline, plus ansible-runner's 1 s poll and its shutdown
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"the hung task (pid {pid}) outlived its hook"
    left = subprocess.run(["pgrep", "-f", str(project / "records")], capture_output=True, text=True).stdout
    assert left == "", left  # no ansible-playbook or worker of this run is left either


def test_what_a_hook_left_in_the_background_dies_with_it(project: Path) -> None:
    """A task that daemonises (nohup ... &, re-parented to init) is not left running either."""
    pidfile = project / "bgpid"
    res, _ = _run(project, "bg.yml", f"""\
- hosts: all
  gather_facts: false
  tasks:
    - name: Start something in the background
      ansible.builtin.shell: (nohup sleep 600 >/dev/null 2>&1 & echo $! > {pidfile}) ; exit 0
""")
    assert res.ok, res.why()
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"the background process (pid {pid}) outlived its hook"


def test_the_run_record_keeps_no_secret_of_the_controllers_environment(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("GOLDEN_STATE_URL", "postgresql://golden:db-s3cret@db.example/golden")
    monkeypatch.setenv("PGPASSWORD", "pg-s3cret")
    res, record = _run(project, "ok.yml", "- hosts: all\n  gather_facts: false\n  tasks: []\n")
    assert res.ok, res.why()
    texts = [p.read_text(errors="replace") for p in record.rglob("*") if p.is_file()]
    assert texts and not [x for x in texts if "s3cret" in x]
    [command] = list((record / "artifacts").glob("*/command"))
    assert "GOLDEN_HOOK_RUN" in command.read_text() and "PATH" in command.read_text()


def test_a_failing_task_is_named_with_its_message(project: Path) -> None:
    res, record = _run(project, "verify.yml", """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Check the page
      ansible.builtin.fail:
        msg: "Status code was 500 and not [200]"
""")
    assert (res.status, res.rc) == ("failed", 2)
    assert res.why() == "task 'Check the page' failed: node1: Status code was 500 and not [200]"
    assert "Status code was 500" in record.with_suffix(".log").read_text()  # the output, as it was printed
    assert (record / "artifacts").is_dir()  # ansible-runner's own record beside it


def test_a_play_that_matches_no_host_is_a_failure(project: Path) -> None:
    res, _ = _run(project, "lb.yml", """\
- hosts: loadbalancers
  gather_facts: false
  tasks:
    - name: Disable the server
      ansible.builtin.debug:
        msg: never runs
""")
    assert not res.ok and res.why() == "its play matched no host with --limit node1"


def test_extra_vars_and_a_vault_password_file(project: Path, tmp_path: Path) -> None:
    pw = tmp_path / "vault-pass"
    pw.write_text("s3cret-vault\n")
    pw.chmod(0o600)
    enc = subprocess.run([str(Path(sys.executable).parent / "ansible-vault"),
                          "encrypt_string", "--vault-password-file", str(pw), "lb-admin-token", "--name", "lb_token"],
                         capture_output=True, text=True, check=True).stdout
    (project / "group_vars").mkdir()
    (project / "group_vars" / "all.yml").write_text(enc)
    res, record = _run(project, "vars.yml", """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Show what golden passed
      ansible.builtin.debug:
        msg: "host={{ golden_host }} build={{ golden_build }} attempt={{ golden_attempt }} token={{ lb_token }}"
""", vault_password_files=[str(pw)])
    assert res.ok, res.why()
    log = record.with_suffix(".log").read_text()
    assert "host=node1 build=b2 attempt=1 token=lb-admin-token" in log
    command = (record / "artifacts").rglob("command")
    assert all("s3cret-vault" not in p.read_text() for p in command)
