"""Search-visited states for the MRM: run the search, keep what it reached, label, retrain.

A learned reward is trained on the responses of a corpus, then queried by a search on
sequences the corpus never held. Where it overrates such a sequence (broken text scored as
safe, in the unaligned world), the search walks there, because that is what it maximises. The
fix is the one of imitation learning under covariate shift (DAgger; Ross, Gordon and Bagnell
2011): run the search with the current MRM, add the states it reached to the training data,
labelled by the guard, and retrain.

Here a *visited state* is every sequence of Saffron's final pool (``keep_pool``; N per prompt
at budget N): the answer it returned and the N − 1 it ranked below it. ``saffron label`` then
labels every prefix of each, as for any corpus item, so the partial states along each path are
covered too.

The prompts are training prompts (train splits) under the same K-token harmful prefill as the
evaluation's attack; the result is a corpus file (:mod:`saffron.train.corpus` format, kind
``search-visited``) that ``saffron label`` reads, resumable: a prompt already in the file is
not searched again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from saffron.data import PromptRow
from saffron.errors import SaffronError
from saffron.files import append_jsonl
from saffron.lm.chat import ChatFormat
from saffron.search.base import SearchConfig, SearchResult, World
from saffron.search.scheduler import Scheduler
from saffron.train.corpus import CorpusItem, read_corpus

VISITED = "search-visited"


@dataclass(frozen=True)
class VisitConfig:
    """Settings of ``saffron visit``."""

    search: SearchConfig = field(default_factory=lambda: SearchConfig(budget=16))
    """The search whose states are kept (Saffron-1, the evaluation's settings; budget = N,
    the states kept per prompt). Its final pool is kept whatever ``options`` say."""
    prefill_tokens: int = 10
    """K of the harmful prefill (the first K tokens of the base policy's compliant answer)."""
    concurrency: int = 8
    """Searches stepped together by the scheduler."""

    def __post_init__(self) -> None:
        if self.prefill_tokens < 0:
            raise SaffronError(f"prefill_tokens must be ≥ 0, got {self.prefill_tokens}")
        if self.concurrency < 1:
            raise SaffronError(f"concurrency must be ≥ 1, got {self.concurrency}")


def pool_items(
    row: PromptRow, result: SearchResult, chat: ChatFormat, tag: str = ""
) -> list[CorpusItem]:
    """The final pool of ``result`` (Saffron run with ``keep_pool``) as corpus items, best
    first; ids ``<prompt id>:visited:<tag>:<rank>`` (``tag`` names the visit, so that the
    states of two rounds on one prompt never share an id). Duplicate responses are kept once."""
    pool = result.extra.get("pool")
    if not isinstance(pool, list):
        raise SaffronError("the search kept no pool (run Saffron with the keep_pool option)")
    prefill = tuple(result.sequence.prefill)
    seen: set[tuple[int, ...]] = set()
    items = []
    for rank, entry in enumerate(pool):
        tokens = tuple(int(t) for t in entry["tokens"])
        if tokens in seen:
            continue
        seen.add(tokens)
        items.append(
            CorpusItem(
                id=f"{row.id}:visited:{tag}:{rank}",
                prompt=row.prompt,
                harmful=True,
                kind=VISITED,
                prefill=chat.decode(prefill),
                prefill_tokens=list(prefill),
                response_tokens=list(tokens),
                response=chat.decode(tokens),
            )
        )
    return items


def visit(
    world: World,
    rows: Sequence[PromptRow],
    starts: dict[str, tuple[int, ...]],
    path: Path,
    cfg: VisitConfig,
) -> list[CorpusItem]:
    """Run Saffron on every row that has a harmful start and is not yet in ``path``, append
    each prompt's final pool to ``path`` as soon as its search ends (ids tagged with the file's
    stem: each round of visits writes its own file), and return every item in the file. Rows
    without a start are skipped (the prefill is the attack)."""
    if world.mrm is None:
        raise SaffronError("visiting needs an MRM: the states are Saffron's")
    done = {item.id.split(":visited:")[0] for item in read_corpus(path)}
    todo = [r for r in rows if r.id in starts and r.id not in done]
    chat = world.policy.chat
    search = replace(cfg.search, options=(*cfg.search.options, ("keep_pool", True)))
    by_key = {r.id: r for r in todo}
    sched = Scheduler(world, max_searches=cfg.concurrency)
    for row in todo:
        start = starts[row.id][: cfg.prefill_tokens]
        seq = chat.sequence(row.prompt, prefill_tokens=start, reserve=search.max_new_tokens)
        sched.submit(row.id, "saffron", seq, search)
    for fin in sched.run():
        if fin.error is not None:
            raise fin.error
        assert fin.result is not None
        items = pool_items(by_key[str(fin.key)], fin.result, chat, tag=path.stem)
        append_jsonl(path, [asdict(it) for it in items], ensure_ascii=True)
    for backend in world.backends().values():
        backend.clear()
    return read_corpus(path)
