"""Fuzzing every operation of every service's OpenAPI document with schemathesis (through the ASGI
app, on PostgreSQL and SQLite): schemathesis' valid (positive) and invalid (negative) cases, sent
with a valid token of a role the operation allows; mixed in, the same with a path id that exists (a
new one where the call uses it up) and with a valid body, as is or with fields replaced by any JSON,
so that the fuzzer gets past "no such id" to the logic behind it.

Checked on every answer: never a 5xx; every 4xx is problem JSON (`application/problem+json` with
`type`, `title` and `status` equal to the status code).

Bounded and deterministic for CI: a fixed number of examples per operation and mode, derandomized
(the same examples on every run), no deadline, no example database.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode

from support.security import ConsentWorld, RegistryWorld, SecurityStack, WorkerWorld, World
from test_authz_matrix import MATRIX, PUBLIC, Op

# Per operation and mode; RESCIND_FUZZ_EXAMPLES=500 for a deeper run by hand.
EXAMPLES = {mode: int(os.environ.get("RESCIND_FUZZ_EXAMPLES", "12")) for mode in GenerationMode}
SETTINGS = hypothesis.settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    print_blob=False,
)
# Each example of these uses up the caller: a throwaway subject each time.
THROWAWAY_CALLER = {("consent", "POST", "/v1/rights-requests")}


@pytest.fixture(scope="module")
def fuzz_worlds(sec_stack: SecurityStack) -> dict[str, World]:
    """Tenants of their own (the fuzzer revokes, deletes and erases what it finds)."""
    return {
        "consent": ConsentWorld(sec_stack),
        "registry": RegistryWorld(sec_stack),
        "worker": WorkerWorld(sec_stack),
    }


def problems_with(r: Any) -> list[str]:
    """What is wrong with an answer, if anything."""
    out = []
    if r.status_code == 503 and r.request.url.path == "/readyz":
        pass  # no broker in these tests: "not ready" is the right answer (and problem JSON, below)
    elif r.status_code >= 500:
        out.append(f"server error {r.status_code}: {r.text[:500]}")
    if r.status_code >= 400:
        ctype = r.headers.get("content-type", "")
        if not ctype.startswith("application/problem+json"):
            out.append(f"{r.status_code} is {ctype!r}, not problem JSON: {r.text[:300]}")
        else:
            body = r.json()
            if not (isinstance(body, dict) and body.get("type") and body.get("title")):
                out.append(f"{r.status_code} problem lacks type/title: {r.text[:300]}")
            elif body.get("status") != r.status_code:
                out.append(f"{r.status_code} problem says status {body.get('status')!r}")
    return out


def send(world: World, case: Any, headers: dict[str, str]) -> Any:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    merged = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
    merged.update(headers)
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        body["content"] = data.encode() if isinstance(data, str) else data
    try:
        return world.client.request(
            kwargs["method"],
            kwargs["url"].removeprefix("http://testserver"),
            params=kwargs.get("params") or None,
            headers=merged,
            **body,
        )
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        # The client could not even put this example on the wire (a header that is not latin-1...).
        hypothesis.reject()
        raise AssertionError("unreachable") from exc


def _operations(stack: SecurityStack, service: str) -> list[Any]:
    schema = schemathesis.openapi.from_dict(stack.app(service).openapi())
    return [result.ok() for result in schema.get_all_operations()]


# Any JSON value: what a mutated field of a valid body becomes.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def mutations(draw: Any, valid: dict[str, Any]) -> dict[str, Any]:
    """A valid body with some fields replaced by any JSON, some dropped, maybe one added."""
    out: dict[str, Any] = {}
    for name, value in valid.items():
        how = draw(st.sampled_from(["keep", "keep", "replace", "drop"]))
        if how == "keep":
            out[name] = value
        elif how == "replace":
            out[name] = draw(JSON)
    if draw(st.booleans()):
        out[draw(st.text(min_size=1, max_size=12))] = draw(JSON)
    return out


def _with_body(case: Any, body: Any) -> Any:
    case.body = body
    return case


def _with_path(case: Any, name: str, value: str) -> Any:
    case.path_parameters = {**(case.path_parameters or {}), name: value}
    return case


def _strategy(world: World, op: Any, entry: Op | None, mode: GenerationMode) -> Any:
    """Schemathesis' cases for `mode`, and (so that the fuzzer gets past "no such id" and reaches
    the logic behind it) the same with a real path id, and with a valid body, as is or mutated."""
    variants = [op.as_strategy(generation_mode=mode)]
    real: dict[str, str] = {}
    if entry is not None and entry.kind:
        (param,) = [p.strip("{}") for p in entry.path.split("/") if p.startswith("{")]
        real = {param: world.record(entry.kind, "a")}
        cases = op.as_strategy(generation_mode=mode, path_parameters=real)
        if entry.fresh:  # a call uses the record up: a new one for each example
            kind = entry.kind
            cases = cases.map(lambda c: _with_path(c, param, world.record(kind, "a", fresh=True)))
        variants.append(cases)
    if entry is not None and entry.body is not None:
        valid = entry.body(world, "a")
        base = op.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=real or None)
        bodies = st.just(valid) if mode == GenerationMode.POSITIVE else mutations(valid)
        variants.append(st.tuples(base, bodies).map(lambda cb: _with_body(*cb)))
    roles = entry.roles if entry is not None else ("none",)
    return st.tuples(st.one_of(variants), st.sampled_from(roles))


def fuzz(stack: SecurityStack, world: World, service: str, mode: GenerationMode) -> list[str]:
    entries = {(e.method, e.path): e for e in MATRIX if e.service == service}
    failures: list[str] = []
    # Deletions last: they take the real records away from the operations that need them.
    for op in sorted(_operations(stack, service), key=lambda o: o.method.upper() == "DELETE"):
        key = (op.method.upper(), op.path)
        entry = entries.get(key)
        assert entry is not None or key in PUBLIC[service], f"{service} {key} is in no matrix"

        @hypothesis.settings(SETTINGS, max_examples=EXAMPLES[mode])
        @given(example=_strategy(world, op, entry, mode))
        def check(example: tuple[Any, str]) -> None:
            case, role = example
            if role == "none":
                headers = {}
            elif (service, *key) in THROWAWAY_CALLER:
                headers = stack.headers(role, f"fuzz-{uuid.uuid4().hex[:12]}")
            else:
                headers = world.headers(role, "a")
            r = send(world, case, headers)
            wrong = problems_with(r)
            sent = r.request.content[:1000].decode(errors="replace")
            assert not wrong, f"{case.method} {r.request.url} as {role}, body {sent!r}: {wrong}"

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            pass  # nothing to make invalid (no parameters, no body): the positive run covers it
        except Exception as exc:
            failures.append(f"{service} {op.label} [{mode.value}]: {exc}")
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("service", ["consent", "registry", "worker"])
def test_fuzz_never_5xx_and_4xx_are_problems(
    sec_stack: SecurityStack, fuzz_worlds: dict[str, World], service: str, mode: GenerationMode
) -> None:
    failures = fuzz(sec_stack, fuzz_worlds[service], service, mode)
    assert not failures, "\n\n".join(failures)


def test_the_fuzzer_sees_every_matrix_operation(sec_stack: SecurityStack) -> None:
    """Nothing in the matrix is hidden from the OpenAPI document, so nothing escapes the fuzzer."""
    for service in ("consent", "registry", "worker"):
        documented = {(op.method.upper(), op.path) for op in _operations(sec_stack, service)}
        listed = {(e.method, e.path) for e in MATRIX if e.service == service}
        assert listed <= documented, listed - documented
