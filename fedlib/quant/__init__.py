"""Mixed-precision quantization for deploying trained models: SDQ and its baselines.

* :mod:`~fedlib.quant.quantizers`: DoReFa weight quantizer, 1-bit weights, activation
  quantizer, straight-through rounding;
* :mod:`~fedlib.quant.layers`: quantized Conv2d/Linear (modes fp, fixed, search, interp) and
  SDQ's stochastic choice between adjacent bitwidths;
* :mod:`~fedlib.quant.search`: SDQ's strategy search and the interpolation baseline;
* :mod:`~fedlib.quant.regularizers`: (entropy-aware) bin regularization;
* :mod:`~fedlib.quant.training`: stage-2 training with distillation, evaluation;
* :mod:`~fedlib.quant.report`: bits per layer, average bits, bytes, compression, BitOps;
* :mod:`~fedlib.quant.pipeline`: :func:`quantize` end to end and the baseline comparison.

Reference: Huang, Shen, Li, Liu, Hu, Wicaksana, Xing, Cheng, "SDQ: Stochastic Differentiable
Quantization with Mixed Precision", ICML 2022, arXiv:2206.04459. Choices the paper leaves open
are marked [O] in the docstrings.
"""

from fedlib.quant.layers import (
    QuantConv2d,
    QuantLayer,
    QuantLinear,
    deployable_state_dict,
    quant_layers,
    quantize_model,
    set_mode,
)
from fedlib.quant.pipeline import (
    Comparison,
    QuantizeResult,
    compare,
    findings,
    per_seed,
    quantize,
    summarize,
)
from fedlib.quant.quantizers import act_quant, binary_weight, dorefa_weight, round_ste
from fedlib.quant.regularizers import bin_regularizer, ebr_loss
from fedlib.quant.report import (
    average_bits,
    compression_ratio,
    layer_table,
    quant_summary,
    quantization_mse,
)
from fedlib.quant.search import InterpolationSearch, SDQSearch
from fedlib.quant.training import QuantTraining, evaluate

__all__ = [
    "Comparison",
    "InterpolationSearch",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
    "QuantTraining",
    "QuantizeResult",
    "SDQSearch",
    "act_quant",
    "average_bits",
    "bin_regularizer",
    "binary_weight",
    "compare",
    "compression_ratio",
    "deployable_state_dict",
    "dorefa_weight",
    "ebr_loss",
    "evaluate",
    "findings",
    "layer_table",
    "per_seed",
    "quant_layers",
    "quant_summary",
    "quantization_mse",
    "quantize",
    "quantize_model",
    "round_ste",
    "set_mode",
    "summarize",
]
