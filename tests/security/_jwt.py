"""Throw-away NATS operator, account and user JWTs, and ``.creds`` files, minted in Python.

Decentralised ("operator mode") NATS authentication chains three ed25519 nkeys: the operator
signs account JWTs, an account signs its users' JWTs, and a client proves it holds the user's
seed by signing the server's nonce. The tests mint the whole chain themselves with ``nkeys``
(so no ``nsc`` binary is needed) in the format nats-server validates (nats-io/jwt v2):

* header ``{"typ":"JWT","alg":"ed25519-nkey"}``; header, claims and signature base64url
  without padding; the signature is over ``header.claims`` by the issuer's key;
* claims ``jti`` (base32, unpadded, of SHA-512/256 over the standard claims without ``jti``,
  as nsc computes it; the server does not check it), ``iat``, ``iss``, ``sub``, ``name`` and a
  ``nats`` object with ``type`` and ``version: 2`` (a version-1 token is verified differently);
* the ``.creds`` file is nsc's decorated user JWT followed by the decorated user seed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import nkeys

__all__ = [
    "Identity",
    "Operator",
    "account_jwt",
    "creds_text",
    "new_identity",
    "operator_jwt",
    "server_config",
    "user_jwt",
]

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED = -1
_PREFIXES = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Identity:
    """An nkey pair: ``public`` (O..., A... or U...) and ``seed`` (SO..., SA... or SU...)."""

    public: str
    seed: str

    def sign(self, data: bytes) -> bytes:
        """The ed25519 signature of ``data`` with this identity's private key."""
        return nkeys.from_seed(bytearray(self.seed.encode())).sign(data)


def new_identity(kind: str) -> Identity:
    """A fresh random ``operator``, ``account`` or ``user`` nkey pair."""
    raw = bytes(nacl.signing.SigningKey.generate())
    seed = nkeys.encode_seed(raw, _PREFIXES[kind])
    public = nkeys.from_seed(bytearray(seed)).public_key
    return Identity(public=public.decode(), seed=seed.decode())


def _encode(issuer: Identity, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
    }
    digest = hashlib.new("sha512_256", _compact(claims)).digest()  # keys in nsc's order
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    claims["nats"] = {**nats, "version": 2}
    signed = f"{_b64(_compact(_HEADER))}.{_b64(_compact(claims))}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def operator_jwt(operator: Identity, name: str = "ionveil-test-operator") -> str:
    """The operator's self-signed JWT."""
    return _encode(operator, operator.public, name, {"type": "operator"})


def account_jwt(
    operator: Identity, account: Identity, name: str = "IONVEIL", *, jetstream: bool = True
) -> str:
    """An account JWT signed by ``operator``, without limits; JetStream enabled (unlimited)
    unless ``jetstream`` is false (the system account may not have it)."""
    keys = ["subs", "data", "payload", "imports", "exports", "conn", "leaf"]
    if jetstream:
        keys += ["mem_storage", "disk_storage", "streams", "consumer"]
    limits: dict[str, Any] = dict.fromkeys(keys, _UNLIMITED) | {"wildcards": True}
    return _encode(operator, account.public, name, {"type": "account", "limits": limits})


def user_jwt(
    account: Identity,
    user: Identity,
    name: str = "worker",
    *,
    pub_allow: list[str] | None = None,
    sub_allow: list[str] | None = None,
) -> str:
    """A user JWT signed by ``account``; ``pub_allow``/``sub_allow`` restrict it when given."""
    nats: dict[str, Any] = {"type": "user"} | dict.fromkeys(("subs", "data", "payload"), _UNLIMITED)
    if pub_allow is not None:
        nats["pub"] = {"allow": pub_allow}
    if sub_allow is not None:
        nats["sub"] = {"allow": sub_allow}
    return _encode(account, user.public, name, nats)


def creds_text(user_token: str, user: Identity) -> str:
    """A ``.creds`` file as ``nsc generate creds`` writes it (nats-py reads the line after
    each ``BEGIN`` marker)."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_token}\n"
        "------END NATS USER JWT------\n"
        "\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed}\n"
        "------END USER NKEY SEED------\n"
        "\n"
        "*************************************************************\n"
    )


@dataclass(frozen=True)
class Operator:
    """An operator with one account: what the server trusts and what users are signed by."""

    operator: Identity
    account: Identity
    system: Identity  # the system account, which JetStream needs in operator mode

    @classmethod
    def create(cls) -> Operator:
        """A fresh operator, its account and its system account."""
        return cls(new_identity("operator"), new_identity("account"), new_identity("account"))

    def write_creds(self, path: Path, name: str = "worker", **permissions: Any) -> Path:
        """Mint a new user of the account (``pub_allow``/``sub_allow`` as in
        :func:`user_jwt`) and write its ``.creds`` file to ``path``."""
        user = new_identity("user")
        path.write_text(creds_text(user_jwt(self.account, user, name, **permissions), user))
        path.chmod(0o600)
        return path


def server_config(operator: Operator) -> str:
    """nats-server configuration trusting ``operator``, its account preloaded in a memory
    resolver (listen address, JetStream and store directory come from the command line)."""
    op, account, system = operator.operator, operator.account, operator.system
    return (
        f"operator: {operator_jwt(op)}\n"
        f"system_account: {system.public}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {account.public}: {account_jwt(op, account)}\n"
        f"  {system.public}: {account_jwt(op, system, 'SYS', jetstream=False)}\n"
        "}\n"
    )
