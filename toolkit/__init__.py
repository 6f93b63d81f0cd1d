"""golden: immutable bare-metal servers."""

import warnings

__version__ = "0.1.0"

# constraints.txt pins every dependency, which keeps new warnings from arriving unannounced; this one
# no pin can remove: ansible-core (2.19, newest) imports DSA from cryptography, which deprecates it on
# import. Filtered by message and module, so the same warning from our own code would still show.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"ansible\._internal\._ssh\._ssh_agent")
