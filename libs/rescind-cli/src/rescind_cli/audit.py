"""`rescind audit verify`: check every service's audit chains against its signed checkpoints.

For each service (consent-api, registry, revocation-worker) it reads, with an operator token, the
JWKS, the newest checkpoint and the heads it signed, every chain entry and every current head;
verifies the checkpoint's signature and Merkle root, recomputes every entry's hash and link, and
checks that no chain fell behind or diverged from the checkpoint. It remembers the newest
checkpoint it verified (`--state`), so that a chain rewound after that checkpoint is detected even
if the checkpoint itself is later deleted or rewritten (docs/adr/0007-signed-audit-checkpoints.md).
Problems name the service and the chain; exit 1 when there is any.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from rescind_cli.errors import CliError
from rescind_cli.tokens import dev_token, load_settings
from rescind_common import audit_chain

OPERATOR_SUB = "ops-cli"
SERVICES = ("consent-api", "registry", "revocation-worker")


def default_consent_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('RESCIND_CONSENT_PORT', '8001')}"


def default_url(service: str) -> str:
    var, port = {
        "consent-api": ("RESCIND_CONSENT_PORT", 8001),
        "registry": ("RESCIND_REGISTRY_PORT", 8002),
        "revocation-worker": ("RESCIND_WORKER_PORT", 8003),
    }[service]
    return f"http://127.0.0.1:{os.environ.get(var, str(port))}"


def default_state_file() -> Path:
    return load_settings().state_dir / "audit-verify-state.json"


def _get(client: httpx.Client, path: str, params: Mapping[str, Any] | None = None) -> Any:
    try:
        response = client.get(path, params=dict(params or {}))
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach {client.base_url}{path}: {exc} (is the stack running? `make run`)"
        ) from exc
    if response.status_code != 200:
        raise CliError(f"{client.base_url}{path} answered {response.status_code}: {response.text[:300]}")
    try:
        return response.json()
    except ValueError:
        raise CliError(f"{client.base_url}{path} answered without JSON") from None


def _pages(
    client: httpx.Client, path: str, params: Mapping[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        q = {**(params or {}), "limit": 500}
        if cursor:
            q["cursor"] = cursor
        body = _get(client, path, q)
        yield from body["items"]
        cursor = body.get("next_cursor")
        if not cursor:
            return


def _links(entries: Iterator[dict[str, Any]]) -> Iterator[audit_chain.Link]:
    for e in entries:
        body = e["body"]
        recomputed = audit_chain.chain_hash(e["prev_hash"], body)
        # The body must describe this very entry: a hash over another chain's or seq's body is no proof.
        named = body.get("chain_id", body.get("subject_id"))
        if named != e["chain_id"] or body.get("seq") != e["seq"]:
            recomputed = "mismatch"
        yield audit_chain.Link(e["chain_id"], e["seq"], e["prev_hash"], e["hash"], recomputed)


def verify_service(
    service: str, client: httpx.Client, remembered: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(report, the checkpoint to remember next) for one service."""
    problems: list[dict[str, Any]] = []
    jwks = _get(client, "/.well-known/jwks.json")
    newest = _get(client, "/v1/audit/checkpoints", {"limit": 1})["items"]
    checkpoint: dict[str, Any] | None = None
    signed_heads: dict[str, tuple[int, str]] = {}
    if newest:
        cp = newest[0]
        try:
            claims = audit_chain.verify_jws(cp["jws"], jwks)
        except ValueError as exc:
            problems.append({"chain_id": None, "problem": f"checkpoint {cp['seq']}: {exc}"})
            claims = {}
        if claims:
            heads = {
                h["chain_id"]: (h["seq"], h["head"])
                for h in _pages(client, "/v1/audit/heads", {"checkpoint": cp["seq"]})
            }
            root = audit_chain.merkle_root((c, s, h) for c, (s, h) in heads.items())
            if (
                claims.get("service") != service
                or claims.get("seq") != cp["seq"]
                or claims.get("root") != root
            ):
                problems.append(
                    {
                        "chain_id": None,
                        "problem": f"checkpoint {cp['seq']}: its heads do not match its signed root",
                    }
                )
            else:
                signed_heads = heads
                checkpoint = {"seq": cp["seq"], "root": root, "heads": {c: list(v) for c, v in heads.items()}}
    if remembered:
        seq = int(remembered["seq"])
        if checkpoint is None or checkpoint["seq"] < seq:
            problems.append(
                {"chain_id": None, "problem": f"checkpoint {seq} seen before is gone (checkpoints rewound)"}
            )
        elif checkpoint["seq"] == seq and checkpoint["root"] != remembered["root"]:
            problems.append(
                {"chain_id": None, "problem": f"checkpoint {seq} differs from the one seen before"}
            )
    current = {h["chain_id"]: (h["seq"], h["head"]) for h in _pages(client, "/v1/audit/heads")}
    links = list(_links(_pages(client, "/v1/audit/entries")))
    checked, chain_problems = audit_chain.verify_links(links, current, signed_heads or None)
    problems.extend(chain_problems)
    if remembered:
        # What the last checkpoint this verifier saw signed still holds, whatever the service shows now.
        old = {c: (int(v[0]), str(v[1])) for c, v in remembered.get("heads", {}).items()}
        _, against_old = audit_chain.verify_links(links, current, old)
        seen = {(p["chain_id"], p["problem"]) for p in problems}
        problems.extend(
            p
            for p in against_old
            if p["problem"].startswith(("chain rewound", "chain rewritten"))
            and (p["chain_id"], p["problem"]) not in seen
        )
    report = {
        "service": service,
        "ok": not problems,
        "checkpoint": checkpoint["seq"] if checkpoint else None,
        "chains_checked": len(current),
        "entries_checked": checked,
        "problems": [{"service": service, **p} for p in problems],
    }
    keep = checkpoint if not problems else None
    return report, keep


def load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the state file {path}: {exc}") from exc
    return state if isinstance(state, dict) else {}


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(path)


def verify_all(clients: Mapping[str, httpx.Client], state_file: Path) -> dict[str, Any]:
    """Every service's report; the state file then remembers each service's newest checkpoint
    that verified (a failing service keeps the one remembered before)."""
    state = load_state(state_file)
    reports = []
    for service, client in clients.items():
        report, keep = verify_service(service, client, state.get(service))
        reports.append(report)
        if keep is not None:
            state[service] = keep
    save_state(state_file, state)
    problems = [p for r in reports for p in r["problems"]]
    return {"ok": not problems, "services": reports, "problems": problems}


def verify(urls: Mapping[str, str], state_file: Path | None = None) -> int:
    """Print the verdict; 0 when every chain of every service is intact, 1 otherwise."""
    settings = load_settings()
    token = os.environ.get("RESCIND_TOKEN") or dev_token(
        settings, role="operator", sub=OPERATOR_SUB, ttl=dt.timedelta(minutes=10)
    )
    headers = {"Authorization": f"Bearer {token}"}
    clients = {s: httpx.Client(base_url=u.rstrip("/"), headers=headers, timeout=120) for s, u in urls.items()}
    try:
        result = verify_all(clients, state_file or default_state_file())
    finally:
        for c in clients.values():
            c.close()
    print(json.dumps(result, indent=2, sort_keys=True))
    for p in result["problems"]:
        where = f"chain {p['chain_id']}" if p.get("chain_id") else "checkpoints"
        print(f"{p['service']}: {where}: {p['problem']}", file=sys.stderr)
    return 0 if result["ok"] else 1
