"""Series identification (glioseg.prepare.series): names checked against TE, TR, TI and the agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from glioseg.errors import InputError
from glioseg.prepare.series import Candidate, choose, classify


def _c(key, name, **tags):
    return classify(Candidate(key, name, Path(f"{key}.dcm"), slices=tags.pop("slices", 24), **tags))


STUDY = [
    _c("1", "3-plane localizer", te=2, tr=8, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), slices=3),
    _c("2", "AX T2 TSE", te=100, tr=4000),
    _c("3", "AX T2 FLAIR", te=120, tr=9000, ti=2500),
    _c("4", "AX T1 SE", te=10, tr=500),
    _c("5", "DWI b1000", te=90, tr=5000, b_value=1000),
    _c("6", "AX T1 SE", te=10, tr=500, contrast_agent="GADOVIST"),
    _c("7", "ADC", te=90, tr=5000, image_type=("DERIVED", "PRIMARY", "ADC")),
]


def test_a_typical_study_is_identified_with_reasons():
    selection = choose(STUDY, {}, Path("study"))
    assert {m: c.key for m, c in selection.chosen.items()} == {"t1n": "4", "t1c": "6", "t2w": "2", "t2f": "3"}
    assert "localiser" in STUDY[0].reason and "diffusion" in STUDY[4].reason and "derived" in STUDY[6].reason
    table = selection.table()
    assert "contrast-agent tag set" in table and "excluded" in table


@pytest.mark.parametrize(
    ("name", "tags", "expected"),
    [
        ("T1 FLAIR AX", {"te": 9, "tr": 2000, "ti": 860}, "t1n"),  # GE's T1-FLAIR is T1-weighted
        ("T1+C 3D MPRAGE", {"te": 3, "tr": 2000, "ti": 900}, "t1c"),
        ("series 9", {"te": 110, "tr": 9000, "ti": 2500}, "t2f"),  # name silent: tags decide
        ("AX T2", {"te": 10, "tr": 500}, None),  # name and tags disagree: never chosen silently
        ("MRHR_T1_AX_POST_GAD_SE_13_se2d1r_t1c", {}, "t1c"),
    ],
)
def test_classify(name, tags, expected):
    assert _c("9", name, **tags).contrast == expected


def test_ambiguous_and_missing_contrasts_are_one_line_errors_naming_the_override():
    two = [*STUDY, _c("8", "COR T1 POST", te=12, tr=550, contrast_agent="GADOVIST")]
    with pytest.raises(InputError, match=r"2 series could be t1c .*--t1c SERIES") as err:
        choose(two, {}, Path("study"))
    assert "\n" not in str(err.value)
    assert choose(two, {"t1c": "8"}, Path("study")).chosen["t1c"].key == "8"
    with pytest.raises(InputError, match="no series identified as t2f"):
        choose([c for c in STUDY if c.key != "3"], {}, Path("study"))
    with pytest.raises(InputError, match="2-D series"):
        choose(STUDY, {"t1n": "1"}, Path("study"))
    with pytest.raises(InputError, match="no such series"):
        choose(STUDY, {"t1n": "99"}, Path("study"))
