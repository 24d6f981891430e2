"""The positive-control corpora say exactly what the tick matrix says."""

from alia.student.controls import control_qa, control_text
from alia.student.formats import INSTRUCTION


def test_control_corpora_follow_the_tick_matrix(tables):
    matrix = tables["fm_sensor_matrix"]
    text, qa = control_text(matrix), control_qa(matrix)
    # one sentence per (asset, failure mode) and per (asset, sensor); two questions each where both exist
    n_fm = matrix.groupby(["asset", "failure_mode"]).ngroups
    n_sensor = matrix.groupby(["asset", "sensor"]).ngroups
    # one question per tick in each direction, asked and answered as D_eval's log-likelihood scorer
    # reads it
    assert len(text) == n_fm + n_sensor == 229
    assert len(qa) == 2 * int(matrix["relevant"].sum()) == 940
    assert text["doc_id"].is_unique and qa["doc_id"].is_unique and (qa["context"] == "").all()
    assert qa["question"].str.startswith(f"{INSTRUCTION}\nQuestion: ").all()
    assert qa["question"].str.endswith("\nAnswer:").all()
    pump = matrix[matrix["asset"] == "Pump"]
    fm = pump["failure_mode"].iloc[0]
    relevant = sorted(pump.loc[(pump["failure_mode"] == fm) & pump["relevant"], "sensor"])
    about_fm = qa["question"].str.contains(fm, regex=False) & qa["question"].str.contains("pump")
    asked = qa[about_fm & qa["answer"].isin(matrix["sensor"])]
    assert sorted(asked["answer"]) == relevant  # the ticked sensors, spelled as D_eval's options
    assert set(qa["answer"]) <= set(matrix["sensor"]) | set(matrix["failure_mode"])
