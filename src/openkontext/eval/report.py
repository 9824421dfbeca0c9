"""Results of an evaluation: per-case scores, grouped summaries, JSON and Rich tables.

Groups:
- categories: single (non-chain) cases by category, plus "all edits" (every single case that has
  an input);
- splits: single cases by phrasing split, edits and generations apart ("train", "heldout",
  "train generation", ...), when the dataset names splits;
- turns: chain turn k over every chain with at least k turns.

In every group the identity baseline is summarised over the cases that have an input, and a
median or mean over no values is None ("n/a" in the tables).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from openkontext.eval.metrics import PSNR_CAP, RESIZE_FILTER, SUCCESS_DB, TurnScore
from openkontext.files import atomic_write

ALL_EDITS = "all edits"
GENERATION = "generation"


@dataclass
class CaseResult:
    id: str
    category: str
    is_chain: bool
    phrasing_split: str | None
    turns: list[TurnScore] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "category": self.category, "chain": self.is_chain,
                "phrasing_split": self.phrasing_split,
                "turns": [t.to_dict() for t in self.turns]}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


@dataclass(frozen=True)
class Stats:
    """A summary of scores; identity_* are over the scores that have an input."""

    count: int
    psnr_median: float | None
    psnr_mean: float | None
    success_rate: float | None
    preservation_median: float | None
    preservation_count: int  # scores with a preservation figure (known, non-empty mask)
    identity_count: int
    identity_psnr_median: float | None
    identity_psnr_mean: float | None
    identity_success_rate: float | None
    identity_preservation_median: float | None
    layout_count: int = 0  # scores with a layout verdict (unfiltered scene targets)
    layout_rate: float | None = None
    identity_layout_rate: float | None = None

    @classmethod
    def of(cls, scores: Iterable[TurnScore]) -> Stats:
        scores = list(scores)
        kept = [s.preservation for s in scores if s.preservation is not None]
        ident = [s for s in scores if s.identity_psnr is not None]
        ident_kept = [s.identity_preservation for s in ident
                      if s.identity_preservation is not None]
        return cls(
            count=len(scores),
            psnr_median=_median([s.psnr for s in scores]),
            psnr_mean=_mean([s.psnr for s in scores]),
            success_rate=_rate([s.success for s in scores]),
            preservation_median=_median(kept),
            preservation_count=len(kept),
            identity_count=len(ident),
            identity_psnr_median=_median([s.identity_psnr for s in ident]),
            identity_psnr_mean=_mean([s.identity_psnr for s in ident]),
            identity_success_rate=_rate([bool(s.identity_success) for s in ident]),
            identity_preservation_median=_median(ident_kept),
            layout_count=len(laid := [s for s in scores if s.layout is not None]),
            layout_rate=_rate([bool(s.layout) for s in laid]),
            identity_layout_rate=_rate([bool(s.identity_layout) for s in laid
                                        if s.identity_layout is not None]),
        )


def _grouped(items: Iterable[tuple[str, TurnScore]]) -> dict[str, Stats]:
    groups: dict[str, list[TurnScore]] = {}
    for key, score in items:
        groups.setdefault(key, []).append(score)
    return {key: Stats.of(scores) for key, scores in groups.items()}


@dataclass
class Report:
    cases: list[CaseResult]
    settings: dict  # model, steps, guidance, seed, preserve, batch_size
    seconds: float = 0.0
    runs: int = 0  # model calls, one per image made

    @property
    def singles(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.is_chain]

    @property
    def chains(self) -> list[CaseResult]:
        return [c for c in self.cases if c.is_chain]

    def by_category(self) -> dict[str, Stats]:
        out = _grouped((c.category, c.turns[0]) for c in self.singles)
        edits = [c.turns[0] for c in self.singles if c.turns[0].identity_psnr is not None]
        if edits:
            out[ALL_EDITS] = Stats.of(edits)
        return out

    def by_split(self) -> dict[str, Stats]:
        def key(c: CaseResult) -> str:
            generation = c.turns[0].identity_psnr is None
            return f"{c.phrasing_split} {GENERATION}" if generation else c.phrasing_split

        return dict(sorted(_grouped((key(c), c.turns[0]) for c in self.singles
                                    if c.phrasing_split is not None).items()))

    def by_turn(self) -> dict[int, Stats]:
        turns = max((len(c.turns) for c in self.chains), default=0)
        return {k: Stats.of(c.turns[k - 1] for c in self.chains if len(c.turns) >= k)
                for k in range(1, turns + 1)}

    @property
    def resized(self) -> int:
        """How many outputs were resized to their target's size before scoring."""
        return sum(t.resized for c in self.cases for t in c.turns)

    def summary(self) -> dict:
        return {
            "cases": len(self.cases),
            "runs": self.runs,
            "seconds": round(self.seconds, 3),
            "resized": self.resized,
            "categories": {k: asdict(v) for k, v in self.by_category().items()},
            "splits": {k: asdict(v) for k, v in self.by_split().items()},
            "turns": {str(k): asdict(v) for k, v in self.by_turn().items()},
        }

    def to_dict(self) -> dict:
        return {
            "metrics": {"psnr_cap_db": PSNR_CAP, "success_db": SUCCESS_DB,
                        "resize_filter": RESIZE_FILTER},
            "settings": self.settings,
            "summary": self.summary(),
            "cases": [c.to_dict() for c in self.cases],
        }

    def write_json(self, path: str | Path) -> dict:
        """Write `to_dict()` to path (atomically) and return it, so a caller that also reads the
        summary or the cases does not build them a second time."""
        data = self.to_dict()
        atomic_write(path, (json.dumps(data, indent=1) + "\n").encode())
        return data


# -- tables --------------------------------------------------------------------------------------


def _num(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a" if value is None else fmt(value)


def _db(value: float | None) -> str:
    return _num(value, lambda v: f"{v:.1f}")


def _pct(value: float | None) -> str:
    return _num(value, lambda v: f"{100 * v:.0f}%")


def _pair(model: str, identity: str) -> str:
    return f"{model} [dim]({identity})[/dim]"


def stats_table(title: str, first: str, rows: dict) -> Table:
    """One row per group; each figure with the identity baseline's in brackets beside it."""
    table = Table(title=f"{title} [dim]— model (identity baseline)[/dim]", title_justify="left")
    table.add_column(first, no_wrap=True)
    table.add_column("n", justify="right")
    for name in ("PSNR median", "PSNR mean", "success", "preservation median", "layout"):
        table.add_column(name, justify="right")
    for key, s in rows.items():
        table.add_row(
            str(key), str(s.count),
            _pair(_db(s.psnr_median), _db(s.identity_psnr_median)),
            _pair(_db(s.psnr_mean), _db(s.identity_psnr_mean)),
            _pair(_pct(s.success_rate), _pct(s.identity_success_rate)),
            _pair(_db(s.preservation_median), _db(s.identity_preservation_median)),
            _pair(_pct(s.layout_rate), _pct(s.identity_layout_rate)),
        )
    return table


def print_report(report: Report, console: Console) -> None:
    """The category table, then splits and chain turns when the dataset has them."""
    s = report.settings
    console.print(
        f"[bold]{len(report.cases)} cases[/bold], {report.runs} model runs in "
        f"{report.seconds:.1f} s — model {s.get('model')}, {s.get('steps')} steps, "
        f"seed {s.get('seed')}, preserve {'on' if s.get('preserve') else 'off'}, "
        f"speed {s.get('speed', 'not recorded')}"
    )
    if report.singles:
        console.print(stats_table("By category", "category", report.by_category()))
    if splits := report.by_split():
        console.print(stats_table("By phrasing split", "split", splits))
    if turns := report.by_turn():
        console.print(stats_table("Chains, by turn", "turn", turns))
    console.print(
        f"[dim]PSNR in dB at the target's size, capped at {PSNR_CAP:g} (identical images); "
        f"success = PSNR >= {SUCCESS_DB:g} dB; preservation = PSNR outside the change mask "
        "against the turn's starting picture; identity = the input returned unchanged; "
        "layout = every object in its cell and colour and every cell's background right "
        "(unfiltered Shapes World targets).[/dim]"
    )
    if report.resized:
        total = sum(len(c.turns) for c in report.cases)
        console.print(f"[yellow]note:[/yellow] {report.resized} of {total} outputs differed in "
                      f"size from their target and were resized to it ({RESIZE_FILTER}) before "
                      "scoring", soft_wrap=True)
