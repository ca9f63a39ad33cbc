"""The intent signals' body gates found in one pass (``GateLiterals``, Aho-Corasick) answer
exactly what one ``in`` test per literal answered, on generated bodies and on real mail."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mime.parse import parse_message
from mailgate.pipeline import intent_signals as sig
from mailgate.pipeline.stages.intent import facts_of

T = TypeVar("T")
CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "corpus"


def signal_tests(kind: type[T]) -> list[T]:
    """Every test of the signal table that is a ``kind``, nested ones included."""
    found: list[T] = []
    stack: list[Any] = [s.test for s in sig.SIGNALS]
    while stack:
        t = stack.pop()
        if isinstance(t, kind):
            found.append(t)
        stack.extend(getattr(t, "tests", ()) or ())
        inner = getattr(t, "test", None)
        if inner is not None:
            stack.append(inner)
    return found


BODIES = signal_tests(sig.Body)
GATES = [(b, sig.body_gate(b.pattern)) for b in BODIES]
LITERALS = sorted({lit for _, g in GATES if g for lit in g})


def facts(body: str) -> sig.Facts:
    return sig.Facts(headers={}, subject="", body=body, sender="", null_sender=False, env={})


def one_at_a_time(body: str, gate: tuple[str, ...], limit: int) -> bool:
    return any(lit in body[:limit] for lit in gate)


def test_the_table_has_gated_body_tests() -> None:
    assert len(BODIES) >= 4 and len(LITERALS) >= 20
    assert set(LITERALS) <= sig.GATE_LITERALS.known


pieces = st.sampled_from([*LITERALS, " ", "\n", "x", "out", "ice", "abwes", "é", "\udcff"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(pieces, max_size=40), cut=st.integers(0, 400))
def test_one_pass_answers_like_one_test_per_literal(parts: list[str], cut: int) -> None:
    body = "".join(parts)
    f = facts(body)
    for b, gate in GATES:
        if gate is None:
            continue
        for limit in (b.limit, cut):
            assert f.may_contain(gate, limit) == one_at_a_time(body, gate, limit), (gate, limit)


def test_real_mail_gives_the_same_intents_through_either_gate() -> None:
    files = sorted(p for p in CORPUS.rglob("*.eml"))[:120]
    assert files
    for path in files:
        env = parse_message(path.read_bytes())
        f = facts_of(env, None)
        for b, gate in GATES:
            if gate is not None:
                assert f.may_contain(gate, b.limit) == one_at_a_time(f.body, gate, b.limit)
        # and a gate that is not registered is looked for the old way
        assert f.may_contain(("zz-never-registered",), 3000) is False


PREFIX_SETS = [v.prefixes for v in signal_tests(sig.Vendor)] + [
    p.prefixes for p in signal_tests(sig.Prefixed)
]
PREFIXES = sorted({p for ps in PREFIX_SETS for p in ps})


def naive_prefixed(headers: dict[str, list[str]], prefixes: tuple[str, ...]) -> str | None:
    for name in headers:
        if name.startswith(prefixes):
            return f"header {name}"
    return None


names = st.one_of(
    st.sampled_from(PREFIXES or ["x-"]),
    st.builds(
        lambda p, s: p + s, st.sampled_from(PREFIXES or ["x-"]), st.sampled_from(["", "id", "-x"])
    ),
    st.sampled_from(["received", "from", "x-mailer", "x-", "list-id", "x-zend", "x-\udcff"]),
)


@settings(max_examples=300, deadline=None)
@given(header_names=st.lists(names, max_size=15))
def test_vendor_header_families_found_in_one_pass(header_names: list[str]) -> None:
    assert len(PREFIX_SETS) >= 10
    assert {"\n" + p for p in PREFIXES} <= sig.HEADER_PREFIXES.known
    headers = {n: ["v"] for n in header_names}
    f = sig.Facts(headers=headers, subject="", body="", sender="", null_sender=False, env={})
    for prefixes in PREFIX_SETS:
        assert sig.prefixed_header(f, prefixes) == naive_prefixed(headers, prefixes), prefixes
    # a family registered after this message's first search is still found
    late = ("zz-late-" + "".join(header_names)[:20] + "-",)
    g = sig.Facts(
        headers={**headers, late[0] + "x": ["v"]},
        subject="",
        body="",
        sender="",
        null_sender=False,
        env={},
    )
    assert g.may_have_prefix(("\n" + late[0],))  # not registered: looked for directly
    sig.prefixed_header(g, PREFIX_SETS[0])  # this message's one pass, before `late` exists
    assert sig.prefixed_header(g, late) == f"header {late[0]}x"  # registers it, searches again


def test_a_literal_the_automaton_cannot_take_does_not_hide_the_others() -> None:
    """ahocorasick_rs silently loses the patterns after one with a lone surrogate: such a
    literal is kept out of the automaton and looked for on its own."""
    lits = sig.GateLiterals()
    lits.add(("\nab", "\nzz\udcff-", "\nzz-late-"))
    assert lits.found("\nab\nzz-late-x") == {"\nab", "\nzz-late-"}
    assert lits.found("\nzz\udcff-\nab") == {"\nab", "\nzz\udcff-"}  # text with a surrogate too
    assert lits.found("nothing") == frozenset()
