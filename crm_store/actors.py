"""Who is asking: the CRM user behind a chat identity, or an unmapped one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    """The acting person. `user_id` is None for a chat user not (yet) mapped to a CRM user."""

    user_id: int | None
    name: str
    email: str | None = None
    role: str = "rep"
    time_zone: str | None = None

    @property
    def is_mapped(self) -> bool:
        return self.user_id is not None

    @property
    def is_admin(self) -> bool:
        return self.is_mapped and self.role == "admin"

    @classmethod
    def unmapped(cls, display_name: str = "unknown user") -> Actor:
        return cls(user_id=None, name=display_name)
