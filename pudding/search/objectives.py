"""What a candidate search minimises: a fixed request set and a loss computed from its scores.

A request set is scored once per trial by the engine (:mod:`pudding.core.scoring`); a loss turns the scores into one
number. ``margin`` needs every choice of an item; ``likelihood`` only the gold one, so its runs score the gold
requests alone (on the default tasks about 30 % fewer positions and 70 % fewer LM-head rows per trial).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pudding.core.errors import OptionError
from pudding.core.scoring import Score
from pudding.core.tasks import Item

LOSSES = ("likelihood", "margin", "perplexity")
"""Loss names a search run can minimise."""

CORPUS_TASK = "corpus"
"""Task label of the perplexity run on a user-given text corpus (task-agnostic, so there is one such run)."""


@dataclass(frozen=True)
class RequestSet:
    """The (context, continuation) pairs a search scores for every trial, and the items they came from.

    ``kind`` is ``choices`` (one request per choice of every item, in item order), ``gold`` (each item's gold
    request only) or ``text`` (one ``("", text)`` request per text). ``offsets[i]`` is where item ``i``'s
    requests start.
    """

    name: str
    kind: str
    requests: tuple[tuple[str, str], ...]
    items: tuple[Item, ...] = ()
    offsets: tuple[int, ...] = ()

    def subset(self, indices: Sequence[int]) -> RequestSet:
        """The same kind of set over some of its units: items, or texts for a ``text`` set (benchmarks time these)."""
        if self.kind == "text":
            return text_requests(self.name, [self.requests[i][1] for i in indices])
        make = choice_requests if self.kind == "choices" else gold_requests
        return make(self.name, [self.items[i] for i in indices])

    @property
    def num_units(self) -> int:
        """How many units :meth:`subset` indexes: texts for a ``text`` set, else items."""
        return len(self.requests) if self.kind == "text" else len(self.items)

    def digest(self) -> str:
        """sha256 of the exact requests (and gold answers): part of every run's resume key."""
        payload = {"kind": self.kind, "requests": self.requests, "gold": [item.gold for item in self.items]}
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def choice_requests(name: str, items: Sequence[Item]) -> RequestSet:
    """Every choice of every item, so likelihood and margin can be computed from one scoring pass."""
    requests: list[tuple[str, str]] = []
    offsets = []
    for item in items:
        offsets.append(len(requests))
        requests.extend(item.requests)
    return RequestSet(name, "choices", tuple(requests), tuple(items), tuple(offsets))


def gold_requests(name: str, items: Sequence[Item]) -> RequestSet:
    """Each item's gold choice only: all the likelihood loss reads."""
    requests = tuple(item.requests[item.gold] for item in items)
    return RequestSet(name, "gold", requests, tuple(items), tuple(range(len(items))))


def text_requests(name: str, texts: Sequence[str]) -> RequestSet:
    """Plain texts scored from the start: an empty context makes the engine use BOS (else EOS) as the prefix."""
    return RequestSet(name, "text", tuple(("", text) for text in texts))


def requests_for(loss: str, task: str, items: Sequence[Item]) -> RequestSet:
    """The request set a ``loss`` run on ``task`` scores: only what that loss reads of the items."""
    if loss == "likelihood":
        return gold_requests(f"{task}:gold", items)
    if loss == "margin":
        return choice_requests(task, items)
    if loss == "perplexity":
        return text_requests(f"{task}:text", gold_texts(items))
    raise OptionError(f"unknown loss {loss!r}; known losses: {', '.join(LOSSES)}")


def gold_texts(items: Sequence[Item]) -> list[str]:
    """A task's own text for the perplexity loss: each item's context followed by its gold answer."""
    return [item.requests[item.gold][0] + item.requests[item.gold][1] for item in items]


def corpus_texts(path: str | Path, num_samples: int, seed: int, max_chars: int = 2000) -> list[str]:
    """A seeded sample of paragraphs (blank-line separated) of a text file, long ones cut at whitespace."""
    text = Path(path).read_text(encoding="utf-8")
    pieces: list[str] = []
    for paragraph in (p.strip() for p in text.split("\n\n")):
        while len(paragraph) > max_chars:
            cut = paragraph.rfind(" ", 0, max_chars)
            cut = max_chars if cut <= 0 else cut
            pieces.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            pieces.append(paragraph)
    if not pieces:
        raise OptionError(f"option corpus: {path} holds no text")
    return [pieces[i] for i in sample_indices(len(pieces), num_samples, seed, CORPUS_TASK)]


def sample_indices(total: int, num_samples: int, seed: int, salt: str) -> list[int]:
    """``num_samples`` of ``range(total)`` (all when fewer), sorted; fixed by (seed, salt) on every machine.

    ``random.Random`` seeded with a string hashes it with sha512, so unlike ``hash()`` it is not salted per process.
    """
    if num_samples < 1:
        raise OptionError(f"option num_samples: must be at least 1, got {num_samples}")
    if total <= num_samples:
        return list(range(total))
    return sorted(random.Random(f"pudding-search:{seed}:{salt}").sample(range(total), num_samples))


# ------------------------------------------------------------------------------------------------------- losses
LossFn = Callable[[RequestSet, Sequence[Score]], float]


def likelihood_loss(rset: RequestSet, scores: Sequence[Score]) -> float:
    """Minus the mean over items of the gold answer's per-token mean log-probability.

    Per-token (``Score.mean_logprob``), so long answers do not outweigh short ones; it is the quantity the PuDDing
    router is trained to predict.
    """
    if rset.kind not in ("choices", "gold"):
        raise ValueError(f"the likelihood loss needs a choices or gold request set, not {rset.kind!r}")
    gold_only = rset.kind == "gold"
    total = sum(
        scores[off if gold_only else off + item.gold].mean_logprob
        for item, off in zip(rset.items, rset.offsets, strict=True)
    )
    return -total / len(rset.items)


def margin_loss(rset: RequestSet, scores: Sequence[Score]) -> float:
    """Minus the mean over items of (gold log-likelihood − mean of the other choices' log-likelihoods).

    Summed log-likelihoods (``Score.logprob``), as the issue defines it: the gap a ``acc`` decision is made on.
    """
    if rset.kind != "choices":
        raise ValueError(f"the margin loss needs every choice of an item (a choices request set), not {rset.kind!r}")
    total = 0.0
    for item, off in zip(rset.items, rset.offsets, strict=True):
        lps = [scores[off + j].logprob for j in range(len(item.requests))]
        others = [lp for j, lp in enumerate(lps) if j != item.gold]
        total += lps[item.gold] - sum(others) / max(len(others), 1)
    return -total / len(rset.items)


def perplexity_loss(rset: RequestSet, scores: Sequence[Score]) -> float:
    """Token-weighted mean negative log-likelihood of the texts (the log of perplexity; SLEB's criterion)."""
    return -sum(s.logprob for s in scores) / max(sum(s.num_tokens for s in scores), 1)


LOSS_FUNCTIONS: dict[str, LossFn] = {
    "likelihood": likelihood_loss,
    "margin": margin_loss,
    "perplexity": perplexity_loss,
}


def get_loss(name: str) -> LossFn:
    """The loss function called ``name``; the error lists the known ones."""
    try:
        return LOSS_FUNCTIONS[name]
    except KeyError:
        raise OptionError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}") from None
