"""Bundled models by name: cards consistent with their files, name resolution, provenance, demo warning."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.synthetic import generate_case, write_case
from glioseg.errors import InputError
from glioseg.infer.models import find_members, resolve_models
from glioseg.models.catalog import DEMO_MODEL, bundled_cards, find_card, read_card, sha256_file
from glioseg.models.checkpoint import read_model_files

runner = CliRunner()


def test_every_bundled_card_matches_its_files():
    cards = bundled_cards()
    assert "demo" in [c.name for c in cards]
    for card in cards:
        card.verify()  # every file listed with its SHA-256, nothing unlisted
        assert card.doc["intended_use"] and "not for clinical use" in card.doc["disclaimer"].lower()
        for _name, folder in card.group_paths():
            for member in find_members(folder).members:
                state, info = read_model_files(member.path)
                stored = {
                    str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()
                }
                assert stored == {info.get("weights_dtype", "float32")}, member.path
        weights = card.weights()
        assert weights is None or (
            len(weights) == len(card.group_paths()) and np.all(np.asarray(weights) > 0)
        )


def test_docs_show_the_card_of_every_bundled_model_as_shipped():
    """docs/models.md carries each bundled model's card (glioseg models show NAME): a repackaged
    model whose docs were not updated fails here, by its checksum."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    for card in bundled_cards():
        assert card.checksum in text, f"docs/models.md does not show {card.name} {card.version} as bundled"
        headings = [line for line in text.splitlines() if line.startswith(f"## {card.name} ")]
        assert any(card.version in h for h in headings), (card.name, card.version, headings)


def test_a_changed_or_added_file_is_refused(tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(DEMO_MODEL, copy)
    card = read_card(copy)
    card.verify()
    (copy / "extra.txt").write_text("x")
    with pytest.raises(InputError, match="not listed in the model card"):
        card.verify()
    (copy / "extra.txt").unlink()
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="checksum differs"):
        card.verify()
    assert card.doc["files"]["model.safetensors"] != sha256_file(copy / "model.safetensors")


def test_a_name_resolves_to_the_bundle_and_an_unknown_name_lists_the_known_ones(tmp_path):
    resolved = resolve_models(["demo"])
    (group,) = resolved.groups
    assert group.name == "demo" and group.card.name == "demo" and group.synthetic
    assert [m.path for m in group.members] == [m.path for m in find_members(DEMO_MODEL).members]
    assert group.provenance()["checksum_sha256"] == find_card("demo").checksum
    by_path = resolve_models(
        [str(DEMO_MODEL)]
    )  # a folder is taken as a folder, checksum over its member files
    assert by_path.cards == [] and by_path.groups[0].synthetic  # its split names only phantoms
    with pytest.raises(InputError, match=r"bundled: .*demo"):
        resolve_models(["no-such-model"])


def test_a_bundle_brings_its_recommended_mode_and_an_unknown_mode_is_refused(tmp_path):
    assert resolve_models(["demo"]).mode == "default"  # a card without default_mode
    shutil.copytree(DEMO_MODEL, tmp_path / "demo")
    card_path = tmp_path / "demo" / "card.json"  # not among the checksummed files
    doc = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**doc, "default_mode": "accurate"}))
    assert resolve_models(["demo"], catalog=tmp_path).mode == "accurate"
    # an ensemble of several --model arguments takes nothing from one card
    assert resolve_models(["demo", str(DEMO_MODEL)], catalog=tmp_path).mode == "default"
    card_path.write_text(json.dumps({**doc, "default_mode": "quick"}))
    with pytest.raises(InputError, match="default_mode 'quick' is not a mode"):
        resolve_models(["demo"], catalog=tmp_path)


def test_demo_model_warns_on_a_scan_glioseg_did_not_make_and_records_provenance(tmp_path):
    case = generate_case(5, 1, "adult", (64, 64, 52), 3.0)
    synthetic = write_case(case, tmp_path / "synthetic")
    real_like = tmp_path / "other" / case.case_id
    shutil.copytree(synthetic, real_like)
    (real_like / f"{case.case_id}-synth.json").unlink()  # as if it came from a scanner
    results = {}
    for name, folder in (("synthetic", synthetic), ("other", real_like)):
        out = tmp_path / f"out-{name}"
        result = runner.invoke(
            app, ["predict", str(folder), "--model", "demo", "--out", str(out), "--tta", "none", "--report"]
        )
        assert result.exit_code == 0, result.output
        record = json.loads((out / f"{case.case_id}.json").read_text())
        html = (out / f"{case.case_id}_report.html").read_text()
        results[name] = (result.output, record, html)
    output, record, html = results["other"]
    assert "WARNING: model 'demo' was trained only on glioseg's synthetic phantoms" in output
    assert (
        record["warnings"] and "synthetic phantoms" in record["warnings"][0] and "synthetic phantoms" in html
    )
    output, record, html = results["synthetic"]
    assert "WARNING" not in output and record["warnings"] == []
    (model,) = record["models"]
    assert model["name"] == "demo" and model["version"] == find_card("demo").version
    assert model["checksum_sha256"] == find_card("demo").checksum and model["checksum_sha256"][:16] in html
    assert record["settings"]["mode"] == "default" and record["settings"]["tta"] == "none"
    assert set(record["inputs"]) == {"t1n", "t1c", "t2w", "t2f"} and record["date_utc"].endswith("+00:00")
    assert "Provenance" in html and "model demo" in html


def test_models_command_lists_and_shows_cards():
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0 and "demo 0.1.0" in listing.output and "intended use" in listing.output
    shown = runner.invoke(app, ["models", "show", "demo"])
    assert shown.exit_code == 0 and find_card("demo").checksum in shown.output
    missing = runner.invoke(app, ["models", "show", "nope"])
    assert missing.exit_code == 1 and "bundled: " in missing.output


@pytest.mark.slow
def test_a_cross_validated_release_packages_into_a_scored_bundle(tmp_path):
    """The release path end to end on five tiny phantoms: two CV runs, weights, post-processing, package."""
    from glioseg.data.synthetic import generate_cohort
    from glioseg.evaluate import evaluate

    data, work = tmp_path / "data", tmp_path / "work"
    generate_cohort(data, 5, "ssa", seed=22, shape=(48, 48, 40), spacing=4.0)
    ids = sorted(p.name for p in data.iterdir())
    work.mkdir()
    (work / "splits.json").write_text(
        json.dumps([{"train": ids[2:], "val": ids[:2]}, {"train": ids[:2], "val": ids[2:]}])
    )
    tiny = [
        "--splits",
        str(work / "splits.json"),
        "--fold",
        "all",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "2",
        "--patch",
        "32,32,32",
        "--base-features",
        "8",
        "--no-augment",
        "--tta",
        "none",
    ]
    for group, model in (("nnunet", "nnunet"), ("mednext", "mednext-s-k3")):
        result = runner.invoke(app, ["train", str(data), "--model", model, "--out", str(work / group), *tiny])
        assert result.exit_code == 0, result.output
    steps = [
        [
            "ensemble-weights",
            str(work / "nnunet"),
            str(work / "mednext"),
            "--out",
            str(work / "weights.json"),
            "--data",
            str(data),
            "--oof-out",
            str(work / "oof-ensemble"),
        ],
        [
            "postprocess",
            "tune",
            "--pred",
            str(work / "oof-ensemble"),
            "--gt",
            str(data),
            "--out",
            str(work / "pp.json"),
        ],
    ]
    steps.append(["degrade", str(data), "--out", str(tmp_path / "degraded"), "--no-preview"])
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, result.output
    fields = tmp_path / "fields.json"
    fields.write_text(
        json.dumps(
            {"version": "0.0.1", "summary": "test", "intended_use": "tests only", "default_mode": "accurate"}
        )
    )
    dest = tmp_path / "models"
    result = runner.invoke(
        app,
        [
            "models",
            "package",
            str(work),
            "--name",
            "tiny",
            "--data",
            str(data),
            "--card",
            str(fields),
            "--dest",
            str(dest),
            "--degraded",
            str(tmp_path / "degraded"),
        ],
    )
    assert result.exit_code == 0, result.output

    card = read_card(dest / "tiny")
    card.verify()
    assert [g["name"] for g in card.doc["groups"]] == ["nnunet", "mednext"] and card.doc[
        "postprocess"
    ] == "pp.json"
    weights = json.loads((work / "weights.json").read_text())["models"]
    assert card.weights() == [[e["weights"][r] for r in ("WT", "TC", "ET")] for e in weights]
    stages = card.doc["results"]["stages"]
    assert list(stages) == ["nnunet", "mednext", "ensemble", "ensemble+postprocess"]
    oof = evaluate(work / "mednext" / "oof", data)
    expected = np.mean([r.regions["TC"].lesionwise_dice for r in oof.results])
    assert stages["mednext"]["TC"]["lesionwise_dice_mean"] == pytest.approx(expected, abs=1e-4)
    assert stages["ensemble"]["WT"]["n"] == 5
    degraded = card.doc["results"]["degraded"]
    assert degraded["severity"] == "moderate" and degraded["scores"]["ET"]["n"] == 5
    from glioseg.train.release import FP16_TOLERANCE

    for entry, member in zip(
        card.doc["results"]["fp16"], find_members(dest / "tiny" / "nnunet").members, strict=False
    ):
        exact_enough = (
            entry["fp16_max_probability_change"] <= FP16_TOLERANCE
        )  # float16 only where it changes nothing
        assert member.info["weights_dtype"] == ("float16" if exact_enough else "float32")
    resolved = resolve_models(["tiny"], catalog=dest)
    assert [g.name for g in resolved.groups] == ["nnunet", "mednext"] and len(resolved.groups[0].members) == 2
    assert resolved.postprocess == dest / "tiny" / "pp.json" and resolved.weights == card.weights()
    assert resolved.mode == "accurate" and card.doc["results"]["mode"] == "accurate"
    assert not list(dest.glob(".tiny-*"))  # no staging folder left behind
    from glioseg.report.model_card import card_text

    text = card_text(card)
    assert "ensemble weights per region" in text and f"mednext {weights[1]['weights']['WT']:.3f}" in text
    assert "| ensemble+postprocess |" in text


def test_validation_curve_averages_the_folds_logs_by_iteration(tmp_path):
    from glioseg.train.release import validation_curve

    header = "epoch,step,train_loss,val_dice_ET,val_dice_TC,val_dice_WT,val_dice_mean\n"
    for k, (et, tc, wt) in enumerate([(0.2, 0.4, 0.6), (0.4, 0.6, 0.8)]):
        log = tmp_path / f"fold_{k}" / "logs" / "csv" / "metrics.csv"
        log.parent.mkdir(parents=True)
        rows = ["0,9,1.0,,,,", f"1,19,,{et},{tc},{wt},{(et + tc + wt) / 3}", "1,19,0.5,,,,"]
        if k == 1:
            rows.append(f"2,29,,{et + 0.1},{tc},{wt},0.6")
        log.write_text(header + "\n".join(rows) + "\n")
    curve = validation_curve(tmp_path, n_folds=3)  # fold 2 has no log yet
    assert [p["iterations"] for p in curve] == [20, 30]
    assert (
        curve[0]["folds"] == 2
        and curve[0]["ET"] == pytest.approx(0.3)
        and curve[0]["WT"] == pytest.approx(0.7)
    )
    assert curve[1]["folds"] == 1 and curve[1]["ET"] == pytest.approx(0.5)
