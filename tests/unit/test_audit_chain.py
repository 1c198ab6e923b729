"""The audit chain's pure parts: hashing, the Merkle root over heads, and what verification
reports for altered, rewound and rewritten chains; production refuses to serve unsigned."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import RegistrySettings
from rescind_common import audit_chain
from rescind_common.audit_chain import GENESIS, Link, merkle_root, verify_links
from revocation_worker.config import WorkerSettings


def chain(chain_id: str, n: int) -> list[Link]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        body = {"chain_id": chain_id, "seq": seq, "kind": "x.created", "data": {"status": "active"}}
        h = audit_chain.chain_hash(prev, body)
        out.append(Link(chain_id, seq, prev, h, h))
        prev = h
    return out


def heads_of(*chains: list[Link]) -> dict[str, tuple[int, str]]:
    return {c[-1].chain_id: (c[-1].seq, c[-1].hash) for c in chains}


def test_canonical_hash_ignores_key_order_but_not_values() -> None:
    a = audit_chain.chain_hash(GENESIS, {"a": 1, "b": [1, 2]})
    assert a == audit_chain.chain_hash(GENESIS, {"b": [1, 2], "a": 1})
    assert a != audit_chain.chain_hash(GENESIS, {"a": 2, "b": [1, 2]})
    assert a != audit_chain.chain_hash("1" * 64, {"a": 1, "b": [1, 2]})


def test_merkle_root_depends_on_every_head_and_not_on_order() -> None:
    heads = [("lic_a", 3, "a" * 64), ("lic_b", 1, "b" * 64), ("lic_c", 7, "c" * 64)]
    root = merkle_root(heads)
    assert root == merkle_root(list(reversed(heads)))
    assert root != merkle_root([("lic_a", 2, "a" * 64), *heads[1:]])  # one seq lower
    assert root != merkle_root(heads[:2])  # one chain dropped
    assert merkle_root([]) != merkle_root(heads[:1]) and len(root) == 64


def test_intact_chains_verify() -> None:
    a, b = chain("lic_a", 3), chain("lic_b", 2)
    checked, problems = verify_links([*a, *b], heads_of(a, b), {"lic_a": (2, a[1].hash)})
    assert (checked, problems) == (5, [])


def test_an_altered_entry_is_named_by_its_chain() -> None:
    a, b = chain("lic_a", 3), chain("lic_b", 2)
    b[1] = Link("lic_b", 2, b[1].prev_hash, b[1].hash, "f" * 64)  # its body no longer hashes to it
    _, problems = verify_links([*a, *b], heads_of(a, b))
    assert [(p["chain_id"], p["seq"], p["problem"]) for p in problems] == [("lic_b", 2, "entry was altered")]


def test_a_consistent_rewind_passes_alone_and_fails_against_the_checkpoint() -> None:
    a = chain("lic_a", 4)
    checkpoint = {"lic_a": (4, a[3].hash)}
    cut = a[:2]  # entries 3 and 4 deleted, the head reset to entry 2
    assert verify_links(cut, heads_of(cut))[1] == []
    _, problems = verify_links(cut, heads_of(cut), checkpoint)
    assert [p["chain_id"] for p in problems] == ["lic_a"]
    assert problems[0]["problem"].startswith("chain rewound")


def test_a_rewritten_history_fails_against_the_checkpoint() -> None:
    signed = chain("lic_a", 3)
    checkpoint = {"lic_a": (3, signed[2].hash)}
    # Another history of the chain, consistent in itself and longer: its entry 3 is not the signed one.
    forged = [Link("lic_a", x.seq, x.prev_hash, x.hash, x.recomputed) for x in chain("lic_z", 5)]
    forged = [Link("lic_a", x.seq, x.prev_hash, x.hash, x.hash) for x in forged]
    _, problems = verify_links(forged, {"lic_a": (5, forged[-1].hash)}, checkpoint)
    assert [(p["chain_id"], p["problem"].split(":")[0]) for p in problems] == [("lic_a", "chain rewritten")]


def test_production_refuses_to_serve_without_an_audit_signing_key(tmp_path: Path) -> None:
    for cls, name in (
        (RegistrySettings, "RESCIND_REGISTRY_AUDIT_SIGNING_KEY_FILE"),
        (WorkerSettings, "RESCIND_WORKER_AUDIT_SIGNING_KEY_FILE"),
    ):
        settings = cls.model_construct(profile="production")
        with pytest.raises(ValueError, match=name):
            settings.require_secrets("serve")
        settings.require_secrets("relay" if cls is RegistrySettings else "migrate")  # only serve signs


def test_signed_checkpoint_verifies_only_with_its_key(tmp_path: Path) -> None:
    key = audit_chain.load_signer(None, tmp_path / "k.pem")
    again = audit_chain.load_signer(None, tmp_path / "k.pem")
    assert again.kid == key.kid  # the development key is made once
    other = audit_chain.Ed25519Signer(audit_chain.Ed25519Signer.new_pem())
    jws = key.sign({"service": "registry", "seq": 1, "root": "ab" * 32})
    assert audit_chain.verify_jws(jws, key.jwks())["seq"] == 1
    with pytest.raises(ValueError, match="unknown key"):
        audit_chain.verify_jws(jws, other.jwks())
    head, payload, sig = jws.split(".")
    with pytest.raises(ValueError):
        # One changed character in the middle of the signature (the last ones may carry no bits).
        flipped = sig[:20] + ("B" if sig[20] != "B" else "C") + sig[21:]
        audit_chain.verify_jws(f"{head}.{payload}.{flipped}", key.jwks())
