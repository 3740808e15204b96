"""Roles: what a node does with the messages it gets. A scheme maps node kinds to roles."""

from node.roles.base import NodeContext, Role

__all__ = ["NodeContext", "Role"]
