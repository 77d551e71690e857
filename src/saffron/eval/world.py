"""Loading the models an evaluation needs: the policy, the guard (always: it judges), the MRM
(only when a method needs it)."""

from __future__ import annotations

from saffron.eval.run import EvalConfig
from saffron.lm.models import load_model
from saffron.lm.policy import make_policy
from saffron.reward.loading import load_guard
from saffron.runtime import CPU, RuntimeConfig
from saffron.search import World, get_method


def load_world(cfg: EvalConfig, runtime: RuntimeConfig = CPU) -> World:
    """The models of ``cfg``, each loaded with ``runtime`` (device, dtype, KV budget). A
    module-level function, so ``functools.partial(load_world, runtime=…)`` is what a Ray worker
    receives to build its own copy."""
    policy = make_policy(load_model(cfg.policy, runtime), kv_budget=runtime.kv_budget)
    guard = load_guard(cfg.guard, policy.chat.tokenizer, runtime=runtime)
    mrm = None
    if any(get_method(m).needs_mrm for m in cfg.methods):
        from saffron.reward.mrm_load import load_mrm

        mrm = load_mrm(cfg.mrm, policy, runtime=runtime)
    return World(policy, guard=guard, mrm=mrm)
