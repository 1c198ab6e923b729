"""`rescind proof get|verify`: fetch a revocation's signed proof, and verify one offline.

`get` authenticates with `RESCIND_TOKEN` when set (the seller app's subject token, or an operator
token from your identity provider), otherwise with a development operator token. `verify` reads
only the two files it is given: no network.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from rescind_cli import jws
from rescind_cli.errors import CliError
from rescind_cli.tokens import dev_token, load_settings

PROOF_TYPE = "rescind-proof+jwt"


def get(revocation_id: str, url: str, out: Path) -> int:
    token = os.environ.get("RESCIND_TOKEN") or dev_token(
        load_settings(), role="operator", sub="ops-cli", ttl=dt.timedelta(minutes=5)
    )
    endpoint = f"{url.rstrip('/')}/v1/revocations/{revocation_id}/proof"
    try:
        r = httpx.get(
            endpoint,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/jose"},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {endpoint}: {exc} (is the stack running? `make run`)") from exc
    if r.status_code != 200:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:300]
        raise CliError(f"GET {endpoint} answered {r.status_code}: {detail}")
    proof = r.text.strip()
    if r.headers.get("content-type", "").startswith("application/json"):
        proof = str(r.json()["proof"])
    try:
        out.write_text(proof + "\n")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(f"wrote the proof of {revocation_id} to {out}", file=sys.stderr)
    return 0


def _read_proof(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        # A changed byte can leave the file undecodable: it is not the proof that was signed.
        return ""
    if text.startswith("{"):
        try:
            return str(json.loads(text)["proof"])
        except (ValueError, KeyError, TypeError):
            raise CliError(f"{path} is JSON without a `proof` string") from None
    return text


def summary(claims: dict[str, Any]) -> list[str]:
    """What a person checks first, one line each."""
    rev = claims.get("revocation") or {}
    samples = claims.get("samples") or {}
    lines = [
        f"revocation {rev.get('id')}: scope {rev.get('scope')}, trigger {rev.get('trigger')}, "
        f"purposes {', '.join(rev.get('purposes') or []) or '-'}, at {rev.get('created_at')}",
        f"consents: {', '.join(claims.get('consents') or []) or '-'}",
        f"samples: {samples.get('count')} (merkle root {samples.get('merkle_root')})",
        f"issued at {claims.get('issued_at')} by {claims.get('iss')}",
    ]
    notices = claims.get("notices") or []
    lines.append(f"holders told: {len(notices)}")
    for n in notices:
        answer = n.get("final_answer") or {}
        delivery = n.get("first_delivery") or {}
        actions = ", ".join(
            f"{m.get('name') or m.get('model_id')}: {m.get('action') or 'unanswered'}"
            for m in n.get("models") or []
        )
        name = n.get("licensee_name") or n.get("licensee_id")
        lines.append(
            f"  {name} ({n.get('licensee_id')}): {answer.get('status')}"
            f", outcome {answer.get('outcome') or '-'}; delivered {delivery.get('delivered_at') or 'not yet'}"
            f" (HTTP {delivery.get('status_code') or '-'}); deadline {n.get('deadline')}"
            f"{' OVERDUE' if n.get('overdue') else ''}; models: {actions or '-'};"
            f" audit steps {len(n.get('audit') or [])}"
        )
    return lines


def merkle_root(sha256s: list[str]) -> str:
    """The proof's sample commitment (docs/api.md): RFC 6962 tree hash, SHA-256, over the hashes'
    bytes, lowercased, unique, sorted; computed bottom-up (an odd node is carried up)."""
    level = [
        hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in sorted({h.lower() for h in sha256s})
    ]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        pairs = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        level = pairs + level[len(pairs) * 2 :]
    return level[0].hex()


def _read_samples(path: Path) -> list[str]:
    """SHA-256 hex values, one per line (or a JSON list of them)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    values = json.loads(text) if text.lstrip().startswith("[") else text.split()
    bad = [
        v for v in values if not (isinstance(v, str) and len(v) == 64 and all(c in HEX for c in v.lower()))
    ]
    if bad:
        raise CliError(f"{path}: not a SHA-256 hex value: {bad[0]!r}")
    return [str(v) for v in values]


HEX = set("0123456789abcdef")


def verify(path: Path, jwks_file: Path, as_json: bool = False, samples: Path | None = None) -> int:
    """Verify a saved proof against a saved JWKS, offline (and, given the samples' hashes, its
    Merkle root). 0 valid, 1 not."""
    keys = jws.load_jwks_file(jwks_file)
    hashes = _read_samples(samples) if samples else None
    token = _read_proof(path)
    try:
        claims, kid = jws.verify(token, keys, typ=PROOF_TYPE)
    except (jws.Invalid, CliError) as exc:
        message = exc.message if isinstance(exc, CliError) else str(exc)
        print(f"INVALID: {path} does not verify against {jwks_file}: {message}", file=sys.stderr)
        return 1
    if hashes is not None:
        signed = (claims.get("samples") or {}).get("merkle_root")
        if merkle_root(hashes) != signed:
            print(
                f"INVALID: the {len(set(hashes))} samples in {samples} are not the ones the proof commits "
                f"to (merkle root {merkle_root(hashes)}, signed {signed})",
                file=sys.stderr,
            )
            return 1
        print(
            f"samples: the {len(set(hashes))} hashes in {samples} match the signed merkle root",
            file=sys.stderr,
        )
    if as_json:
        print(json.dumps(claims, indent=2, sort_keys=True))
    else:
        print("\n".join(summary(claims)))
    print(f"valid: signed by key {kid}", file=sys.stderr)
    return 0
