"""Greedy channel search: cost kinds and targets (`costs`), candidate scoring (`evaluate`), the
greedy pass (`greedy`) and the result file (`result`)."""
from .costs import (COST_KINDS, COSTS, CostKind, CostModel, Target, check_feasible, format_cost, parse_quantity,
                    register_cost, targets_from_options, uniform_baseline)
from .evaluate import Evaluator, PrefixRunner, Score
from .greedy import CRITERIA, candidates_of, choose, greedy_search
from .result import FORMAT, VERSION, load_result, select_targets

__all__ = ["COST_KINDS", "COSTS", "CostKind", "CostModel", "Target", "check_feasible", "format_cost",
           "parse_quantity", "register_cost", "targets_from_options", "uniform_baseline", "Evaluator",
           "PrefixRunner", "Score", "CRITERIA", "candidates_of", "choose", "greedy_search", "FORMAT", "VERSION",
           "load_result", "select_targets"]
