"""Who may do what through a mount shared with other users (DESIGN §3, nvmefs(5)).

The mount's policy (--passthru) is the mounting user's and root's; every other
user gets --others, never more than the mount's own policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec.passthru import weaker


@dataclass(frozen=True)
class Access:
    owner: int                  # the uid that mounted
    policy: str = "readonly"    # for the owner and root
    others: str = "info"        # for everyone else

    def policy_for(self, uid: int) -> str:
        if uid in (0, self.owner):
            return self.policy
        return weaker(self.policy, self.others)
