"""The positive-control corpora say exactly what the tick matrix says."""

from alia.controls import control_qa, control_text


def test_control_corpora_follow_the_tick_matrix(tables):
    matrix = tables["fm_sensor_matrix"]
    text, qa = control_text(matrix), control_qa(matrix)
    # one sentence per (asset, failure mode) and per (asset, sensor); two questions each where both exist
    n_fm = matrix.groupby(["asset", "failure_mode"]).ngroups
    n_sensor = matrix.groupby(["asset", "sensor"]).ngroups
    assert len(text) == n_fm + n_sensor == 229 and len(qa) == 456
    assert text["doc_id"].is_unique and qa["doc_id"].is_unique and (qa["context"] == "").all()
    pump = matrix[(matrix["asset"] == "Pump")]
    fm = pump["failure_mode"].iloc[0]
    relevant = sorted(pump.loc[(pump["failure_mode"] == fm) & pump["relevant"], "sensor"])
    asked = qa[qa["question"] == f"Which sensors are relevant for detecting {fm} in a pump?"]
    assert len(asked) == 1
    answer = asked["answer"].iloc[0].rstrip(".").lower().replace(" and ", ", ")
    assert sorted(answer.split(", ")) == relevant
    negative = qa[qa["question"] == f"Which sensors are NOT relevant for detecting {fm} in a pump?"]
    assert all(s not in negative["answer"].iloc[0].lower() for s in relevant if "/" not in s)
