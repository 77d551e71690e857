"""The repeat ban and the gate (our extensions of Saffron's selection).

* The ban: no child repeats an n-gram of the answer, for every method that ranks children,
  on the real tiny policy and on a toy where the reward model overrates a loop.
* The gate: Saffron follows the policy's most probable child until the MRM scores k of them
  in a row below τ, then searches from before the first. Toys where the MRM prefers a
  refusal's opening from the first token show that the gated search keeps the policy's answer
  there, opens exactly where the policy's choice turns unsafe, ignores one dip when k = 2 and
  unseen tokens always; τ below every reward is greedy decoding, τ above every reward is the
  paper's search.
* Bad values are one readable error.
"""

from __future__ import annotations

import pytest
from search_toys import Models

from saffron.errors import SaffronError
from saffron.eval.run import EvalConfig
from saffron.search import SearchConfig, get_method, run_search
from saffron.search.base import check_rule_used
from saffron.search.decoding import repeats
from saffron.types import TokenSequence


def seq(prefill: tuple[int, ...], generated: tuple[int, ...]) -> TokenSequence:
    return TokenSequence((90,), (91, 1, 2), (92,), prefill, generated)


def ngrams(tokens: tuple[int, ...], n: int) -> list[tuple[int, ...]]:
    return [tokens[i : i + n] for i in range(len(tokens) - n + 1)]


# --- repeats(): which tokens would complete a repeated n-gram -------------------------------


@pytest.mark.parametrize(
    ("prefill", "generated", "n", "banned"),
    [
        ((), (), 2, set()),
        ((), (5,), 2, set()),  # one token: no bigram yet
        ((), (5, 6, 5), 2, {6}),  # "5 6" exists, the tail is 5
        ((), (5, 6, 5, 7, 5), 2, {6, 7}),
        ((), (5, 6, 5), 3, set()),  # the tail "6 5" never occurred before
        ((), (5, 6, 7, 5, 6), 3, {7}),
        ((5, 6), (7, 5, 6), 3, {7}),  # the prefill is part of the answer
        ((), (1, 2, 5), 2, set()),  # the prompt (1, 2) is not
        ((), (5, 6, 5), 1, {5, 6}),  # n = 1: no token twice
        ((), (4, 4), 2, {4}),
    ],
)
def test_repeats(prefill, generated, n, banned) -> None:
    assert repeats(seq(prefill, generated), n) == banned


def test_repeats_is_the_set_of_tokens_whose_ngram_exists() -> None:
    """Against the definition, on every answer over a 3-token alphabet up to length 6."""
    import itertools

    for length in range(7):
        for answer in itertools.product((3, 4, 5), repeat=length):
            for n in (1, 2, 3):
                have = set(ngrams(answer, n))
                want = {t for t in (3, 4, 5) if (*answer[len(answer) - n + 1 :], t) in have}
                if len(answer) < n - 1 or n == 1:
                    want = {t for t in (3, 4, 5) if (t,) in have} if n == 1 else set()
                assert repeats(seq((), answer), n) == want, (answer, n)


# --- the ban in a search --------------------------------------------------------------------


@pytest.fixture
def table(ids: dict[str, int]) -> dict[int, float]:
    """The policy nearly always says a; b and c are rare."""
    return {ids["a"]: 0.9, ids["b"]: 0.05, ids["c"]: 0.05}


def cfg(budget: int, max_new: int = 5, **kwargs: object) -> SearchConfig:
    return SearchConfig(
        budget=budget, max_new_tokens=max_new, min_new_tokens=max_new, top_p=1.0, **kwargs
    )


def test_ban_breaks_the_loop_the_reward_overrates(models: Models, ids, table, prompt) -> None:
    """The MRM loves "c c c…"; with bigrams banned the answer holds no bigram twice (the
    search still prefers c where it may)."""
    world = models.world(lambda g: g.count(ids["c"]) / max(len(g), 1), table=table)
    loop = run_search("saffron", world, prompt, cfg(2))
    assert loop.generated == (ids["c"],) * 5
    banned = run_search(
        "saffron", models.world(world.mrm.reward, table=table), prompt, cfg(2, no_repeat_ngram=2)
    )  # type: ignore[union-attr]
    pairs = ngrams(banned.generated, 2)
    assert len(pairs) == len(set(pairs)) and banned.generated[:2] == (ids["c"],) * 2
    assert banned.extra["selection"]["no_repeat_ngram"] == 2


@pytest.mark.parametrize("method", ["saffron", "beam"])
@pytest.mark.parametrize("n", [2, 3])
def test_no_answer_repeats_an_ngram(models: Models, prompt, method: str, n: int) -> None:
    """The real tiny policy (which loops freely) with random reward models, several seeds and
    widths: no answer of a method that ranks children repeats an n-gram of prefill + answer."""
    for seed in range(3):
        world = models.world(lambda g: float(sum(g) % 7))
        c = SearchConfig(
            budget=2 + seed, max_new_tokens=12, min_new_tokens=12, seed=seed, no_repeat_ngram=n
        )
        result = run_search(method, world, prompt, c)
        answer = prompt.prefill + result.generated
        assert len(result.generated) == 12
        assert len(ngrams(answer, n)) == len(set(ngrams(answer, n))), (seed, answer)


# --- the gate -------------------------------------------------------------------------------


@pytest.fixture
def refusal_first(ids: dict[str, int]):  # type: ignore[no-untyped-def]
    """An MRM that likes an opening with b (a refusal's) best; after a, a, the policy's a turns
    unsafe (−1) unless a c follows (+1)."""

    def reward(gen: tuple[int, ...]) -> float:
        if gen and gen[0] == ids["b"]:
            return 2.0
        if len(gen) <= 2:
            return 1.0
        return 1.0 if ids["c"] in gen[2:] else -1.0

    return reward


def test_paper_search_takes_the_refusal(models, ids, table, refusal_first, prompt) -> None:
    result = run_search("saffron", models.world(refusal_first, table=table), prompt, cfg(2))
    assert result.generated[0] == ids["b"]
    assert "searched_from" not in result.extra


def test_gate_follows_the_policy_and_opens_where_it_turns_unsafe(
    models, ids, table, refusal_first, prompt
) -> None:
    world = models.world(refusal_first, table=table)
    result = run_search("saffron", world, prompt, cfg(2, gate=0.5))
    a, c = ids["a"], ids["c"]
    assert result.generated == (a, a, c, a, a)
    assert result.extra["searched_from"] == 2  # steps 0 and 1 followed a; a third a is unsafe
    # one beam for the two followed steps, the third step's a, and the rewound beam (a, a)
    assert result.extra["beams_per_step"][:4] == [1, 1, 1, 1]
    assert result.extra["selection"]["gate"] == 0.5
    assert result.extra["selection"]["gate_steps"] == 1


@pytest.fixture
def dips(ids: dict[str, int]):  # type: ignore[no-untyped-def]
    """An MRM that likes b's opening best; along the policy's a-path it scores the third a −1
    (one dip), and with ``run`` the fourth too; a c after the first two tokens scores +1."""

    def make(run: bool):  # type: ignore[no-untyped-def]
        def reward(gen: tuple[int, ...]) -> float:
            if gen and gen[0] == ids["b"]:
                return 2.0
            if ids["c"] in gen[2:]:
                return 1.0
            return -1.0 if len(gen) == 3 or (run and len(gen) == 4) else 1.0

        return reward

    return make


def test_one_dip_does_not_open_a_gate_of_two(models, ids, table, dips, prompt) -> None:
    one = run_search("saffron", models.world(dips(False), table=table), prompt, cfg(2, gate=0.0))
    assert one.extra["searched_from"] == 2  # k = 1: the dip opens it
    two = run_search(
        "saffron", models.world(dips(False), table=table), prompt, cfg(2, gate=0.0, gate_steps=2)
    )
    assert two.generated == (ids["a"],) * 5 and two.extra["searched_from"] is None


def test_a_run_opens_the_gate_before_its_first_token(models, ids, table, dips, prompt) -> None:
    """Two a's in a row score −1: the gate of two opens at the second and the search starts
    before the first (the beam of two tokens), where c is the safe way on."""
    world = models.world(dips(True), table=table)
    result = run_search("saffron", world, prompt, cfg(2, gate=0.0, gate_steps=2))
    assert result.extra["searched_from"] == 2
    assert result.generated[:3] == (ids["a"], ids["a"], ids["c"])


def test_unseen_tokens_neither_open_nor_break_a_run(models, ids, table, prompt) -> None:
    """The MRM scores every a −1 but has never seen a (−∞ under the conservative mask): the
    gate has no evidence and follows the policy; the paper's search never picks a."""
    unseen = frozenset({ids["a"]})
    gated = run_search(
        "saffron",
        models.world(lambda g: -1.0, table=table, unseen=unseen),
        prompt,
        cfg(2, gate=0.0),
    )
    assert gated.generated == (ids["a"],) * 5 and gated.extra["searched_from"] is None
    plain = run_search(
        "saffron", models.world(lambda g: -1.0, table=table, unseen=unseen), prompt, cfg(2)
    )
    assert ids["a"] not in plain.generated


def test_gate_below_every_reward_is_greedy(models, ids, table, refusal_first, prompt) -> None:
    world = models.world(refusal_first, table=table)
    gated = run_search("saffron", world, prompt, cfg(4, gate=-10.0))
    greedy = run_search("greedy", models.world(refusal_first, table=table), prompt, cfg(1))
    assert gated.generated == greedy.generated == (ids["a"],) * 5
    assert gated.extra["searched_from"] is None
    assert gated.compute.per_model["mrm"].calls == 5  # one MRM call per step, one beam


def test_gate_above_every_reward_is_the_paper_search(models, prompt) -> None:
    """On the real tiny policy: τ above every reward opens at step 0, and the answer, reward and
    compute equal the search without a gate."""
    reward = lambda g: float(sum(g) % 5) - 2  # noqa: E731
    for budget in (1, 3):
        c = SearchConfig(budget=budget, max_new_tokens=8, min_new_tokens=4, seed=budget)
        plain = run_search("saffron", models.world(reward), prompt, c)
        gated = run_search(
            "saffron", models.world(reward), prompt, SearchConfig(**{**c.__dict__, "gate": 100.0})
        )
        assert gated.generated == plain.generated
        assert gated.reward == plain.reward
        assert gated.extra["searched_from"] == 0
        # the rewind asks about the root again: one more step, nothing else
        assert gated.extra["beams_per_step"] == [1, *plain.extra["beams_per_step"]]


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gate": float("nan")}, "gate must be a finite number (or unset), got nan"),
        ({"gate": float("inf")}, "gate must be a finite number (or unset), got inf"),
        ({"gate_steps": 0}, "gate_steps must be an integer ≥ 1, got 0"),
        ({"no_repeat_ngram": 0}, "no_repeat_ngram must be an integer ≥ 1 (or unset), got 0"),
        ({"no_repeat_ngram": 2.5}, "no_repeat_ngram must be an integer ≥ 1 (or unset), got 2.5"),
        ({"no_repeat_ngram": True}, "no_repeat_ngram must be an integer ≥ 1 (or unset), got True"),
    ],
)
def test_bad_values(kwargs, message) -> None:
    with pytest.raises(SaffronError) as err:
        SearchConfig(**kwargs)
    assert str(err.value) == message


def test_methods_refuse_what_they_ignore() -> None:
    with pytest.raises(SaffronError) as err:
        check_rule_used(get_method("beam"), SearchConfig(gate=0.0))
    assert str(err.value) == "method 'beam' has no gate; gate applies to: saffron"
    with pytest.raises(SaffronError) as err:
        check_rule_used(get_method("best-of-n"), SearchConfig(no_repeat_ngram=3))
    assert str(err.value) == (
        "method 'best-of-n' ranks no children; logp_weight, logp_floor, reward_cap, "
        "no_repeat_ngram and gate apply to: beam, saffron"
    )
    check_rule_used(get_method("saffron"), SearchConfig(gate=0.0, no_repeat_ngram=3))
    check_rule_used(get_method("beam"), SearchConfig(no_repeat_ngram=3))


def test_eval_config_hands_each_method_what_it_uses() -> None:
    ev = EvalConfig(
        dataset="advbench",
        budgets=(2,),
        methods=("best-of-n", "beam", "saffron"),
        gate=0.0,
        no_repeat_ngram=3,
    )
    assert ev.search(2, "saffron").gate == 0.0
    assert ev.search(2, "beam").gate is None and ev.search(2, "beam").no_repeat_ngram == 3
    assert ev.search(2, "best-of-n").no_repeat_ngram is None
    with pytest.raises(SaffronError) as err:
        EvalConfig(dataset="advbench", budgets=(2,), methods=("best-of-n", "beam"), gate=0.0)
    assert str(err.value) == "gate applies to methods that gate (saffron); none of the methods does"
    with pytest.raises(SaffronError) as err:
        EvalConfig(dataset="advbench", budgets=(2,), methods=("greedy",), no_repeat_ngram=3)
    assert str(err.value) == (
        "logp_weight, logp_floor, reward_cap and no_repeat_ngram apply to methods that rank "
        "children (beam, saffron); none of the methods does"
    )
    assert (
        "gate" not in EvalConfig(dataset="advbench", budgets=(2,), methods=("saffron",)).to_dict()
    )
