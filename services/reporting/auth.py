"""Bearer tokens with scopes and portfolios.

``PMO_API_TOKEN`` is an administrator's token (scopes read and admin, every portfolio).
``PMO_API_TOKENS`` adds more as JSON: ``[{"name": "metabase", "token": "…", "scopes":
["read"], "portfolios": ["retail"]}]`` (``portfolios`` absent or ``["*"]``: all).
Tokens are kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pydantic import BaseModel, Field

READ = "read"
ADMIN = "admin"


class TokenSpec(BaseModel):
    name: str
    token: str = Field(min_length=16)
    scopes: list[str] = Field(default_factory=lambda: [READ])
    portfolios: list[str] = Field(default_factory=lambda: ["*"])


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    portfolios: frozenset[str] | None  # None: every portfolio

    def can_see(self, portfolio: str) -> bool:
        return self.portfolios is None or portfolio in self.portfolios


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    def __init__(self, admin_token: str, extra: str = "") -> None:
        self._principals: dict[str, Principal] = {}
        if admin_token:
            self._principals[_digest(admin_token)] = Principal(
                "admin", frozenset({READ, ADMIN}), None
            )
        for spec in (TokenSpec.model_validate(t) for t in json.loads(extra or "[]")):
            portfolios = None if "*" in spec.portfolios else frozenset(spec.portfolios)
            self._principals[_digest(spec.token)] = Principal(
                spec.name, frozenset(spec.scopes), portfolios
            )

    def find(self, token: str) -> Principal | None:
        return self._principals.get(_digest(token))
