"""The measured numbers in the docs are the committed benchmark results (scripts/docs_numbers.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("docs_numbers", ROOT / "scripts" / "docs_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("doc", _script().documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_numbers_block_is_rendered_from_its_committed_result(doc):
    text = doc.read_text(encoding="utf-8")
    assert _script().render(text) == text, f"{doc.name} is stale: run python scripts/docs_numbers.py"


def test_every_renderer_is_quoted_and_records_where_it_ran():
    script = _script()
    quoted = {m.group(2) for doc in script.documents() for m in script.BLOCK.finditer(doc.read_text())}
    assert quoted == set(script.RENDERERS)
    for name in script.RENDERERS:
        result = json.loads(script.result_file(name).read_text())
        if name in script.RESULT_FILES:  # an experiment's run: its report records the machine
            assert {"scale", "seed", "versions", "arms", "comparisons"} <= result.keys(), name
        else:
            assert {"date_utc", "cpu", "cpu_count", "versions"} <= result.keys(), name


def test_an_experiment_block_is_its_committed_run():
    """The README's experiment table is rendered from the run's results.json: a changed score there
    changes the table, and the verdicts are the run's own."""
    script = _script()
    result = json.loads(script.RESULT_FILES["experiment_small"].read_text())
    text = script.experiment(result)
    first = result["arms"][0]
    assert first["title"] in text and all(claim in text for claim in result["comparisons"])
    first["scores"]["WT_dice"] = [1.0] * len(first["scores"]["WT_dice"])
    changed = script.experiment(result)
    assert changed != text and "1.000 ± 0.000" in changed.splitlines()[2]
    # the footnote says what kind of cases were scored: the real run scores real (degraded) cases,
    # although some of its arms were pre-trained on phantoms
    real = script.experiment(json.loads(script.RESULT_FILES["experiment_real"].read_text()))
    assert "scored target cases (real; some arms pre-trained on synthetic phantoms)" in real
    assert "scored test cases (synthetic)" in text


def test_a_changed_result_changes_the_docs(tmp_path):
    script = _script()
    result = json.loads((script.RESULTS / "prepare_speed.json").read_text())
    result["wall_s"] = 123.4
    (tmp_path / "prepare_speed.json").write_text(json.dumps(result))
    text = "intro\n<!-- numbers: prepare_speed -->\nold table\n<!-- /numbers -->\nend\n"
    rendered = script.render(text, tmp_path)
    assert "123.4 s" in rendered and "old table" not in rendered
    assert rendered.startswith("intro\n") and rendered.endswith("<!-- /numbers -->\nend\n")
    with pytest.raises(KeyError, match="no renderer"):
        script.render("<!-- numbers: nothing -->\n<!-- /numbers -->", tmp_path)
