"""params.yaml sections as the stages read them."""

import pytest

from alia.core.params import load_params


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    # `dvc exp run -S train_embedder.learning_rate=5e-5` writes 5e-5, which YAML 1.1 reads as a string
    path = tmp_path / "params.yaml"
    path.write_text('train:\n  lr: 5e-5\n  lr2: 2.0e-5\n  big: 1E3\n  quoted: "5e-5"\n  name: e5\n  n: 10\n')
    params = load_params("train", path)
    assert params == {"lr": 5e-5, "lr2": 2e-5, "big": 1000.0, "quoted": "5e-5", "name": "e5", "n": 10}
    assert isinstance(params["n"], int)


def test_a_missing_section_names_the_ones_there(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("a: 1\nb: 2\n")
    with pytest.raises(ValueError, match=r"no 'c' section; sections: \['a', 'b'\]"):
        load_params("c", path)
