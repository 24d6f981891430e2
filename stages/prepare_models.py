"""Stage prepare_models@<role>: the pretrained model of one role as an ordinary checkpoint under
models/pretrained/.

python stages/prepare_models.py <role> <out_dir>
"""

import json
import sys

from alia import errors
from alia.models import prepare_causal_lm, prepare_embedder
from alia.params import load_params
from alia.precision import resolve_dtype

errors.install()  # a known failure prints one line (the stages that end with alia.tracking get this there)
role, out_dir = sys.argv[1], sys.argv[2]
params = load_params("prepare_models")[role]

if params["kind"] == "causal_lm":
    info = prepare_causal_lm(params["source"], out_dir, dtype=resolve_dtype(params["dtype"]))
elif params["kind"] == "sentence_transformer":
    info = prepare_embedder(params["source"], out_dir)
else:
    raise ValueError(
        f"params.yaml prepare_models.{role}.kind: expected causal_lm or sentence_transformer, "
        f"got {params['kind']!r}"
    )
print(json.dumps({role: info}, indent=2))
