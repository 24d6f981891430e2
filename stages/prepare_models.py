"""Stage prepare_models@<role>: the pretrained model of one role as an ordinary checkpoint under
models/pretrained/.

python stages/prepare_models.py <role> <out_dir>
"""

import json
import sys

from alia.core.io import replacing
from alia.core.models import prepare_causal_lm, prepare_embedder
from alia.core.params import load_params
from alia.core.precision import resolve_dtype
from alia.core.tracking import check_outputs

role, out_dir = sys.argv[1], sys.argv[2]
check_outputs(out_dir)  # an unwritable folder stops it now
params = load_params("prepare_models")[role]  # its kind is causal_lm or sentence_transformer

with replacing(out_dir) as partial:  # the checkpoint whole, or none
    if params["kind"] == "causal_lm":
        info = prepare_causal_lm(
            params["source"], partial, dtype=resolve_dtype(params["dtype"]), hub_id=params["hub_id"]
        )
    else:
        info = prepare_embedder(params["source"], partial, hub_id=params["hub_id"])
print(json.dumps({role: info}, indent=2))
