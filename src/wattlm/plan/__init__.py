"""PREDICT: energy, time, CO2e and cost of training and serving before running.

from wattlm.plan import TrainRequest, plan_train, InferRequest, plan_infer, lookup
plan_train(TrainRequest(params=7e9, tokens=2e12, hardware="A100-80GB", devices=2048, mfu=0.4))
"""

from .catalogue import Hardware, catalogue, lookup
from .infer import InferRequest, plan_infer
from .train import TrainRequest, plan_train, training_flops

__all__ = [
    "Hardware",
    "InferRequest",
    "TrainRequest",
    "catalogue",
    "lookup",
    "plan_infer",
    "plan_train",
    "training_flops",
]
