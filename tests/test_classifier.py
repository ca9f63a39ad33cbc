"""The routing classifier on the fixture set: held-out figures, the stored format, the stage.

One model is trained per module on a stratified 75/25 split of ``fixtures/routing`` (fixed
seed) and reused; training takes about a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.classifier.features import Vectorizer, feature_counts, fit_vocabulary, message_text
from mailgate.classifier.model import LinearModel, ModelError, load_model
from mailgate.classifier.train import Example, TrainError, evaluate, split, train
from mailgate.cli import main
from mailgate.cli.model import examples_from_file
from mailgate.config import Config, load_config
from mailgate.pipeline.offline import MemoryPorts, run_file
from mailgate.pipeline.runner import PipelineRunner
from mailgate.pipeline.stages import registry
from mailgate.pipeline.stages.classify import ClassifyStage, ModelHolder

ROUTING = Path(__file__).resolve().parent.parent / "fixtures" / "routing"
LABELS = ROUTING / "labels.jsonl"
QUEUES = {"billing", "refunds", "shipping", "technical", "account", "security", "sales", "feedback"}


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return examples_from_file(Config(), LABELS)


@pytest.fixture(scope="module")
def trained(examples: list[Example]) -> tuple[LinearModel, list[Example]]:
    part_train, part_test = split(examples, test_size=0.25, seed=17)
    return train(part_train, min_examples=5).model, part_test


def test_fixture_set_is_big_varied_and_labelled(examples: list[Example]) -> None:
    lines = [json.loads(x) for x in LABELS.read_text().splitlines()]
    assert len(examples) == len(lines) >= 300
    assert {e.queue for e in examples} == QUEUES
    langs = {t for e in examples for t in e.tags if t in ("en", "de", "fr", "es")}
    styles = {t for e in examples for t in e.tags} - langs
    assert langs == {"en", "de", "fr", "es"}
    assert {"plain", "reply", "forward", "html", "terse", "long"} <= styles
    # not a handful of sentences repeated: nearly every body is unique
    assert len({e.body for e in examples}) >= 0.97 * len(examples)


def test_held_out_figures(trained: tuple[LinearModel, list[Example]]) -> None:
    model, held_out = trained
    report = evaluate(model, held_out, threshold=0.7)
    print(
        f"\nheld-out {report['total']}: accuracy {report['accuracy']:.3f}, coverage at 0.70"
        f" {report['coverage']:.3f}, accuracy at 0.70 {report['accuracy_at_threshold']:.3f}"
    )
    assert report["total"] == 90
    assert report["accuracy"] >= 0.85
    assert report["coverage"] >= 0.7
    assert report["accuracy_at_threshold"] >= report["accuracy"] - 1e-9
    assert set(report["per_queue"]) == QUEUES
    for q, s in report["per_queue"].items():
        assert s["f1"] is not None and s["f1"] >= 0.6, (q, s)
    matrix = report["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == 90
    # the sweep: coverage never grows with the threshold
    cov = [p["coverage"] for p in report["sweep"]]
    assert cov == sorted(cov, reverse=True) and cov[0] == 1.0


def test_eval_cli_json_matches_the_split(
    trained: tuple[LinearModel, list[Example]], tmp_path: Path
) -> None:
    model, held_out = trained
    mine = evaluate(model, held_out, threshold=0.7)
    result = CliRunner().invoke(
        main, ["model", "eval", str(LABELS), "--json", "--seed", "17"], env={"MAILGATE_CONFIG": ""}
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    for key in ("accuracy", "coverage", "accuracy_at_threshold"):
        assert out[key] == pytest.approx(mine[key])
    assert set(out["per_queue"]) == QUEUES
    assert out["split"] == {"train": 270, "test": 90, "seed": 17}


def test_text_output_has_the_tables() -> None:
    result = CliRunner().invoke(main, ["model", "eval", str(LABELS)], env={"MAILGATE_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert "precision" in result.output and "confusion" in result.output
    assert re.search(r"^\s+0\.70\s+[01]\.\d{3}\s+[01]\.\d{3}$", result.output, re.M)


def test_stored_json_round_trip_predicts_the_same(
    trained: tuple[LinearModel, list[Example]],
) -> None:
    model, held_out = trained
    again = load_model(model.dumps().encode())
    for e in held_out[:20]:
        a, b = model.predict(e.subject, e.body), again.predict(e.subject, e.body)
        assert a.queue == b.queue
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
        assert a.features == b.features


def test_vectorizer_matches_the_counted_features() -> None:
    docs = [("Refund please", "I want my money back for order #1234"), ("Login", "cannot log in")]
    vec = fit_vocabulary([feature_counts(s, b) for s, b in docs])
    idx, values = vec.transform(*docs[0])
    names = {vec.features[i] for i in idx}
    assert names == set(feature_counts(*docs[0]))
    assert "w:money back" in names and "s:refund" in names and "c:fun" in names
    assert len(set(idx.tolist())) == len(idx)
    assert all(v > 0 for v in values)


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(_Boom.marker), "executed"))

    marker = ""


def test_a_pickle_payload_is_refused_and_never_run(tmp_path: Path) -> None:
    _Boom.marker = str(tmp_path / "pwned")
    payload = pickle.dumps(_Boom())
    with pytest.raises(ModelError, match="pickles are refused"):
        load_model(payload)
    # the same bytes inside a JSON string are just a string, and the format check refuses them
    with pytest.raises(ModelError):
        load_model(json.dumps({"format": "pickle", "data": payload.hex()}))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(coef=d["coef"][:-1]),
        lambda d: d.update(idf=[float("nan")] * len(d["idf"])),
        lambda d: d.update(queues=["only-one"]),
        lambda d: d.update(format="mailgate.linear-text/99"),
        lambda d: d["features"].__setitem__(0, "x:evil"),
    ],
)
def test_a_damaged_model_is_refused(
    trained: tuple[LinearModel, list[Example]], mutate: Any
) -> None:
    doc = trained[0].to_json()
    doc = json.loads(json.dumps(doc))
    mutate(doc)
    with pytest.raises(ModelError):
        load_model(json.dumps(doc, allow_nan=True))


def test_training_needs_two_queues_with_enough_labels() -> None:
    few = [Example("s", f"refund {i}", "refunds") for i in range(10)] + [
        Example("s", "invoice", "billing")
    ]
    with pytest.raises(TrainError, match="two queues"):
        train(few, min_examples=5)


# --------------------------------------------------------------------------- the stage


def _runner(cfg: Config, model: LinearModel | None, tenant: str = "default") -> PipelineRunner:
    holder = ModelHolder.fixed({tenant: (7, model)} if model is not None else {})
    stages = {**registry(), "classify": ClassifyStage(cfg.classifier, holder)}
    return PipelineRunner(cfg, MemoryPorts(), stages=stages)


def _cfg(tmp_path: Path, extra: str = "", threshold: float = 0.7) -> Config:
    path = tmp_path / "mailgate.toml"
    path.write_text(
        f'[store]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[classifier]\nenabled = true\nthreshold = {threshold}\nfallback_queue = "triage"\n'
        f'[pipeline]\ndefault_queue = "inbox"\n{extra}'
    )
    return load_config(str(path), env={})


def _message(subject: str, body: str) -> bytes:
    return (
        f"From: Ana <ana@example.org>\r\nTo: support@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <t-{abs(hash((subject, body)))}@example.org>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def test_confident_model_routes_with_reasons_and_schema(
    trained: tuple[LinearModel, list[Example]], tmp_path: Path
) -> None:
    cfg = _cfg(tmp_path)
    raw = _message(
        "Refund request for order 48213", "I returned the headphones, please refund my money."
    )
    env, _ = asyncio.run(run_file(raw, cfg, runner=_runner(cfg, trained[0])))
    route = env["route"]
    assert env["queue"] == "refunds"
    assert route["model"]["version"] == 7 and route["model"]["accepted"] is True
    assert (
        route["model"]["confidence"] >= 0.7 and route["confidence"] == route["model"]["confidence"]
    )
    assert any("refund" in f for f in route["model"]["features"])
    assert any(r.startswith("model v7: queue 'refunds' with confidence") for r in route["reasons"])
    assert not any(r.startswith("default queue") for r in route["reasons"])
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        (
            Path(__file__).resolve().parent.parent / "src/mailgate/schemas/envelope.schema.json"
        ).read_text()
    )
    jsonschema.validate(route, schema["properties"]["route"])


def test_low_confidence_goes_to_the_fallback_queue_with_the_reason(
    trained: tuple[LinearModel, list[Example]], tmp_path: Path
) -> None:
    cfg = _cfg(tmp_path, threshold=0.99)
    raw = _message("Hello", "Quick question about my account and the last invoice, thanks.")
    env, _ = asyncio.run(run_file(raw, cfg, runner=_runner(cfg, trained[0])))
    model = env["route"]["model"]
    assert model["accepted"] is False and model["confidence"] < 0.99
    assert env["queue"] == "triage"
    reason = next(r for r in env["route"]["reasons"] if r.startswith("low confidence"))
    assert re.match(r"low confidence \(0\.\d\d < 0\.99\): model v7 leaned to '\w+'", reason)
    assert "sent to 'triage' for manual triage" in reason


def test_no_model_or_disabled_keeps_the_default_queue(
    trained: tuple[LinearModel, list[Example]], tmp_path: Path
) -> None:
    cfg = _cfg(tmp_path)
    raw = _message("Refund request", "please refund my money")
    env, _ = asyncio.run(run_file(raw, cfg, runner=_runner(cfg, None)))
    assert env["queue"] == "inbox" and "model" not in env["route"]
    off = dataclasses.replace(cfg, classifier=dataclasses.replace(cfg.classifier, enabled=False))
    env, _ = asyncio.run(run_file(raw, off, runner=_runner(off, trained[0])))
    assert env["queue"] == "inbox" and "model" not in env["route"]


RULE = """
[[rules]]
name = "vip"
if = { subject = "/zq-vip/i" }
then = { queue = "vip", tags = ["vip"] }
"""


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=200
    ),
    words=st.lists(
        st.sampled_from(["refund", "invoice", "password", "parcel", "XSS", "demo"]), max_size=6
    ),
)
def test_a_matching_rule_always_wins_over_the_model(
    trained: tuple[LinearModel, list[Example]], tmp_path: Path, text: str, words: list[str]
) -> None:
    cfg = _cfg(tmp_path, RULE, threshold=0.0)
    body = " ".join(words) + " " + text.replace("\r", " ")
    subject = "zq-VIP " + " ".join(words)
    env, _ = asyncio.run(run_file(_message(subject, body), cfg, runner=_runner(cfg, trained[0])))
    assert env["queue"] == "vip"
    assert env["route"]["rule"] == "vip"
    assert "model" not in env["route"]
    # and without the rule's word the model decides (threshold 0: always accepted)
    env, _ = asyncio.run(
        run_file(_message(" ".join(words) or "hello", body), cfg, runner=_runner(cfg, trained[0]))
    )
    assert (
        env["route"]["model"]["queue"] in QUEUES and env["queue"] == env["route"]["model"]["queue"]
    )


def test_message_text_reads_the_quoted_text_of_a_bare_reply() -> None:
    subject, body = message_text(
        {"subject": "Re: x", "replyText": "see below", "text": "see below\n> my parcel is lost"}
    )
    assert subject == "Re: x" and "parcel" in body
    assert isinstance(Vectorizer([], []).transform("", "")[0].tolist(), list)
