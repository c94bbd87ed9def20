"""A link and speed harness: worker processes in network namespaces joined through a bridge,
each link shaped with tc (rate) and nfdelay (delay, jitter, loss), CPU held down with cgroups.

Needs root, iproute2, iptables (legacy), libnetfilter-queue and gcc (scripts/setup.sh --dev).
See bench/netsim/README.md.
"""
