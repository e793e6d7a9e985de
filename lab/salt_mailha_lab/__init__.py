"""The guide's whole cluster on one machine: ``mailha-lab up|status|drill|down``.

One debootstrapped Debian tree (cached), one systemd-nspawn container per pillar node on an
overlay of that tree, each in its own network namespace wired to bridges that live in a namespace
of their own; a salt-master from this venv on the bridge; the example pillar re-addressed to the
lab subnets. Nothing here touches the host's own interfaces. See README.md in this folder.
"""
