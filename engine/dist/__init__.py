"""Collectives behind one small Group interface, bucketing, compression, distributed AdamW.

Entry points: :func:`engine.dist.factory.make_group` and
:class:`engine.dist.dist_optimizer.DistributedAdamW` (see README.md in this folder).
"""

from engine.dist.factory import make_group
from engine.dist.group import Group, SingleGroup
from engine.dist.mailbox import CollectiveError, Mailbox
from engine.dist.shards import shard_bounds, shard_range

__all__ = [
    "CollectiveError",
    "Group",
    "Mailbox",
    "SingleGroup",
    "make_group",
    "shard_bounds",
    "shard_range",
]
