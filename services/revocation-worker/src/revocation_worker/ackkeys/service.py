"""Licensees' ack-signing keys, and verifying an ack's detached signature against them.

A signature is a detached compact JWS (RFC 7515 appendix F: `header..signature`) over the
canonical JSON of the ack body without its `signature` field (notices/rules.canonical_json). The
payload is base64url-encoded in the signing input as usual, or, with `"b64": false` (RFC 7797, in
`crit`), used as is. Only EdDSA (Ed25519) and ES256 (P-256) keys are taken.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.problems import Problem, field_error
from revocation_worker.ackkeys import repository
from revocation_worker.ackkeys.models import AckKey
from revocation_worker.ackkeys.schemas import AckKeyIn, AckKeyOut

MAX_KEYS_PER_LICENSEE = 10
# The members of each public key kind (RFC 7638 thumbprint members).
_PUBLIC = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order, base64url."""
    members = {k: public[k] for k in _PUBLIC[public["kty"]]}
    return _b64url(
        hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest()
    )


def _bad(field: str, message: str) -> Problem:
    return Problem(422, f"The key is not usable: {message}.", errors=[field_error(field, message)])


def parse_jwk(jwk: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(alg, the public JWK as stored) of an Ed25519 or P-256 public key; 422 naming the member."""
    if "d" in jwk:
        raise _bad("body.jwk.d", "a private key: register the public key only")
    kty = jwk.get("kty")
    loader: type[OKPAlgorithm] | type[ECAlgorithm]
    if kty == "OKP":
        if jwk.get("crv") != "Ed25519":
            raise _bad("body.jwk.crv", "OKP keys must be Ed25519")
        alg, loader = "EdDSA", OKPAlgorithm
    elif kty == "EC":
        if jwk.get("crv") != "P-256":
            raise _bad("body.jwk.crv", "EC keys must be P-256")
        alg, loader = "ES256", ECAlgorithm
    else:
        raise _bad("body.jwk.kty", "must be OKP (Ed25519) or EC (P-256)")
    if jwk.get("alg") not in (None, alg):
        raise _bad("body.jwk.alg", f"a {jwk.get('crv')} key signs with {alg}")
    public = {k: jwk[k] for k in _PUBLIC[kty] if k in jwk}
    try:
        loader.from_jwk(json.dumps(public))
    except (jwt.InvalidKeyError, ValueError, KeyError, TypeError) as exc:
        raise _bad("body.jwk.x", f"not a valid {jwk.get('crv')} public key ({exc})") from None
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 1 <= len(kid) <= 128):
        raise _bad("body.jwk.kid", "a string of 1 to 128 characters")
    public["kid"] = kid or thumbprint(public)
    public["alg"] = alg
    public["use"] = "sig"
    return alg, public


def create(session: Session, licensee_id: str, body: AckKeyIn) -> AckKey:
    alg, public = parse_jwk(body.jwk)
    if repository.count(session, licensee_id) >= MAX_KEYS_PER_LICENSEE:
        raise Problem(
            409, f"A licensee may register at most {MAX_KEYS_PER_LICENSEE} ack keys; delete one first."
        )
    if repository.by_kid(session, licensee_id, public["kid"]) is not None:
        raise Problem(
            409,
            f"A key with kid {public['kid']!r} is already registered.",
            errors=[field_error("body.jwk.kid", "already registered")],
        )
    key = AckKey(
        id=new_id("akk"), licensee_id=licensee_id, kid=public["kid"], alg=alg, jwk=public, created_at=utcnow()
    )
    session.add(key)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # registered at the same moment by another request
        raise Problem(409, f"A key with kid {public['kid']!r} is already registered.") from None
    return key


def to_out(key: AckKey) -> AckKeyOut:
    return AckKeyOut(id=key.id, kid=key.kid, alg=key.alg, jwk=key.jwk, created_at=key.created_at)


class BadSignature(Exception):
    """The signature does not verify (the message says why, without secrets)."""


def verify_detached(session: Session, licensee_id: str, signature: str, payload: bytes) -> str:
    """The kid of the licensee's key under which `signature` verifies over `payload`; BadSignature
    otherwise."""
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise BadSignature("not a detached compact JWS (header..signature)")
    try:
        header = jwt.get_unverified_header(f"{parts[0]}.e30.{parts[2]}")
    except jwt.PyJWTError as exc:
        raise BadSignature(f"unreadable header ({exc})") from None
    kid = header.get("kid")
    keys = (
        [k for k in [repository.by_kid(session, licensee_id, kid)] if k is not None]
        if isinstance(kid, str)
        else repository.all_of(session, licensee_id)
    )
    if not keys:
        raise BadSignature("no registered ack key" + (f" with kid {kid!r}" if isinstance(kid, str) else ""))
    unencoded = header.get("b64", True) is False
    for key in keys:
        public = jwt.PyJWK({k: v for k, v in key.jwk.items() if k != "use"}, algorithm=key.alg)
        try:
            if unencoded:
                jwt.api_jws.PyJWS().decode_complete(
                    signature, public, algorithms=[key.alg], detached_payload=payload
                )
            else:
                jwt.api_jws.PyJWS().decode_complete(
                    f"{parts[0]}.{_b64url(payload)}.{parts[2]}", public, algorithms=[key.alg]
                )
            return key.kid
        except jwt.PyJWTError:
            continue
    raise BadSignature("the signature does not verify over this ack under the licensee's keys")
