"""Who may call what: subjects never; licensees their own records; operators everything."""

from __future__ import annotations

from typing import Annotated

from rescind_common.auth import Principal, Role, require_role

LicenseeOrOperator = Annotated[Principal, require_role(Role.LICENSEE, Role.OPERATOR)]


def visible_licensee(principal: Principal) -> str | None:
    """The licensee whose records this caller may see; None for an operator (all of them)."""
    return None if principal.role == Role.OPERATOR else principal.sub
