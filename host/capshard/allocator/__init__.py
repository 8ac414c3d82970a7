"""The Dynamic Shard Allocator: a pure function from (catalog, agreement,
device state, QoS needs, time) to a plan.

    from capshard.allocator import allocate, DeviceState, Needs
    plan = allocate(catalog, agreement, device, Needs.from_report(report), now, previous=None)
    plan.operations   # op-dicts in the instruction wire form, in apply order
    plan.profile      # shard id -> op-dict, the profile the device will run
    plan.expires_at   # when the dynamic profile lapses (None: baseline only)
    plan.explanations # readable sentences
    plan.to_json()

    baseline_plan(catalog, agreement, device) -> the tier's baseline as a plan
"""

from ..catalog.errors import CatalogError, DeviceError, InputError, NeedsError
from .core import HYSTERESIS, allocate, baseline_plan
from .naive import naive_solve
from .needs import ClassNeed, DeviceState, Needs
from .plan import OP_FIELDS, Plan
from .problem import Problem, utility, violation
from .solver import solve

__all__ = [
    "allocate", "baseline_plan", "naive_solve", "DeviceState", "Needs", "ClassNeed", "Plan",
    "OP_FIELDS", "HYSTERESIS", "Problem", "solve", "utility", "violation", "CatalogError",
    "DeviceError", "InputError", "NeedsError",
]
