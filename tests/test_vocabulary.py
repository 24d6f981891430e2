import pytest

from alia.data.vocabulary import Canonicaliser, normalise_text


@pytest.mark.parametrize(
    "raw, names",
    [
        ("temparature", ["temperature"]),  # ISO typo
        ("Compresor pressure/ pressure ratio", ["compressor pressure", "pressure ratio"]),
        ("Oil leakage/ consumption", ["oil leakage", "oil consumption"]),  # head word carried over
        ("bearing wear/ damage", ["bearing wear", "bearing damage"]),
        ("Amps/ volts/ load", ["amps", "volts", "load"]),
        ("Failure to lock/unlock", ["failure to lock", "failure to unlock"]),
        ("External leakage — utility medium", ["external leakage - utility medium"]),  # em dash
        ("External leakage utility medium", ["external leakage - utility medium"]),  # no dash at all
        ("External leakage - utility medium", ["external leakage - utility medium"]),
        ("Control / Signal failure", ["control failure", "signal failure"]),  # override
        ("Connection/ bushing faults", ["connection faults", "bushing faults"]),  # override
        ("power factor/tanδ", ["power factor"]),
        ("Power turbine damaged", ["power turbine damage"]),  # synonym
        ("  Vibration ", ["vibration"]),
        (
            "Dielecric frequency response (DFR)/ Polarization and de-polarization current (PDC)/ "
            "Recovery Voltage Method (RVM)",
            [
                "dielectric frequency response (dfr)",
                "polarization and de-polarization current (pdc)",
                "recovery voltage method (rvm)",
            ],
        ),
    ],
)
def test_canonical_names(rules, raw, names):
    assert rules.names(raw) == names


def test_label_joins_parts(rules):
    assert rules.label("fuel pressure/ fuel flow") == "fuel pressure / fuel flow"
    assert rules.label("Temparature") == "temperature"


def test_normalise_text_unifies_dashes_and_spaces():
    assert (
        normalise_text("Internal\u00a0leakage \u2013 process  medium") == "internal leakage - process medium"
    )


def test_unknown_rules_section_is_an_error(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("spellings: {a: b}\n")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['spellings'\]"):
        Canonicaliser.from_yaml(path)
