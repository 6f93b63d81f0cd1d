"""The role developer's tools: scaffold a role, lint it, and run its Molecule scenario in a chroot."""
