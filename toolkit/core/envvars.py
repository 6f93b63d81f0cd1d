"""Every environment variable golden reads, with what it does: the one list the man page and
docs/configuration.md are checked against (tests/unit/test_docs.py finds any read that is not here)."""

from __future__ import annotations

ENVIRONMENT: dict[str, str] = {
    "GOLDEN_PROJECT": "the project folder (images/, roles/, golden.yaml); default: the current folder or a parent",
    "GOLDEN_HOME": "the state home (store, runs, state.db, locks); default /var/lib/golden as root, else "
                   "$XDG_DATA_HOME/golden",
    "GOLDEN_CACHE": "caches (inventory, package indexes, bake roots); default $XDG_CACHE_HOME/golden",
    "GOLDEN_STORE": "the image store, when not <home>/store (a shared mount for replicas)",
    "GOLDEN_STATE_URL": "postgresql://... for shared fleet state; default SQLite in the home",
    "GOLDEN_INVENTORY": "the inventory source when no -i is given ('lab': the lab's)",
    "ANSIBLE_INVENTORY": "inventory sources, comma-separated, when neither -i nor GOLDEN_INVENTORY is given",
    "ANSIBLE_CONFIG": "the ansible.cfg whose [defaults] inventory is used after golden.yaml's",
    "ANSIBLE_VAULT_PASSWORD_FILE": "a vault password file, as for ansible",
    "ANSIBLE_VAULT_IDENTITY_LIST": "vault identities (label@source, comma-separated), as for ansible",
    "GOLDEN_VAULT_PASSWORD_FILE": "one more vault password file (the rendered service passes its credential here)",
    "GOLDEN_MIRROR": "the Debian mirror bakes use; default: the build host's own apt sources",
    "GOLDEN_SECURITY_MIRROR": "the Debian security mirror bakes use",
    "GOLDEN_PACKER": "the packer executable for builder: packer",
    "GOLDEN_PACKER_ACCELERATOR": "QEMU accelerator for packer bakes (tcg or kvm)",
    "GOLDEN_PACKER_SSH_TIMEOUT": "how long a packer machine may take to reach SSH (a duration)",
    "GOLDEN_FLEET_TOKEN_FILE": "golden serve: the file holding the /fleet token (--fleet-token-file)",
    "GOLDEN_USER": "the user recorded in audit history and runs; default SUDO_USER, then the login name",
    "GOLDEN_TEST_CACHE": "role tests: where the debootstrapped test chroot is cached",
    "JOURNAL_STREAM": "set by systemd: log lines then carry syslog priorities and no timestamps",
    "XDG_DATA_HOME": "the base of the default state home for a non-root user",
    "XDG_CACHE_HOME": "the base of the default cache",
}
