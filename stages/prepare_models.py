"""Stage prepare_models@<role>: the pretrained model of one role as an ordinary checkpoint under
models/pretrained/.

python stages/prepare_models.py <role> <out_dir>
"""

import json
import sys

from alia.models import prepare_causal_lm, prepare_embedder
from alia.params import load_params

role, out_dir = sys.argv[1], sys.argv[2]
params = load_params("prepare_models")[role]

if params["kind"] == "causal_lm":
    info = prepare_causal_lm(params["source"], out_dir, dtype=params["dtype"])
elif params["kind"] == "sentence_transformer":
    info = prepare_embedder(params["source"], out_dir)
else:
    sys.exit(
        f"prepare_models.{role}.kind: expected causal_lm or sentence_transformer, got {params['kind']!r}"
    )
print(json.dumps({role: info}, indent=2))
