"""What the sfl roles share: this run's scheme parameters."""

from __future__ import annotations

from typing import cast

from node.roles.base import NodeContext
from node.schemes.sfl.scheme import SflParams


def params_of(ctx: NodeContext) -> SflParams:
    """This run's ``scheme:`` parameters."""
    from node.schemes.sfl.scheme import SflScheme

    return cast(SflParams, SflScheme.parse_params(ctx.config.scheme_params))
