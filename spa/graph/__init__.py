"""The channel dependency graph (networkx), its coupled groups, head_dim groups, and MACs."""

from .channels import ChannelGraph, build
from .coupling import Coupling, couple, oracle_mask
from .groups import Group, find_groups, interface_blocked, removed_elements
from .headdim import head_dim_groups, sink_roles
from .macs import node_macs, param_count, total_macs

__all__ = ["ChannelGraph", "build", "Coupling", "couple", "oracle_mask", "Group", "find_groups", "interface_blocked", "removed_elements", "head_dim_groups", "sink_roles", "node_macs",
           "param_count", "total_macs"]
