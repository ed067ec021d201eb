"""The promotion gate and rollback: the moves of the ``champion`` alias.

Aliases of ``settings.model_name``:

* ``champion`` - the version serving loads (``models:/<name>@champion``);
* ``challenger`` - the latest version the gate did not promote;
* ``previous_champion`` - the champion before the current one (what ``rollback`` restores).

Gate rule: a new version becomes ``champion`` only if its ``settings.promotion_metric`` on its
test window is at least ``settings.promotion_floor`` AND strictly greater than the current
champion's value on the same window. **Ties keep the champion**: replacing the served model
needs evidence that it is better, and an equal score is none. With no champion, clearing the
floor suffices. Otherwise the version gets ``challenger`` and the reason is recorded on it (tag
``gate_reason`` and its description).

"The same window": if the champion was assessed on the same test window, its recorded metric
is used; otherwise, if it was trained before that window (its training cutoff is not after the
window's start), it is scored on the window now; if its training data overlaps the window, the
two cannot be compared fairly and the new version is not promoted.

Promotion is one alias move (``champion`` -> new version); before it, the old champion is
recorded as the new version's ``previous_champion`` tag and alias, so ``rollback`` is one alias
move back and can be repeated down the chain. Every promotion and rollback is appended to the
registered model's ``champion_history`` tag.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.config import Settings
from pipelines.contracts import CHALLENGER_ALIAS, CHAMPION_ALIAS, PREVIOUS_CHAMPION_ALIAS
from pipelines.protocol import SplitWindows
from pipelines.registry import tracking, versions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    candidate_value: float
    champion_value: float | None = None
    champion_version: str | None = None
    version: str | None = None

    @property
    def alias(self) -> str:
        return CHAMPION_ALIAS if self.promote else CHALLENGER_ALIAS

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alias": self.alias}


def promotion_verdict(
    metric: str,
    candidate_value: float,
    champion_value: float | None,
    floor: float,
    champion_version: str | None = None,
) -> PromotionDecision:
    """The gate rule alone (no registry): see the module docstring."""
    common = {
        "metric": metric,
        "candidate_value": candidate_value,
        "champion_value": champion_value,
        "champion_version": champion_version,
    }
    if not candidate_value >= floor:  # also refuses NaN
        return PromotionDecision(
            False, f"{metric} {candidate_value:.4f} is below the floor {floor:.4f}", **common
        )
    if champion_value is None:
        return PromotionDecision(
            True, f"no champion yet; {metric} {candidate_value:.4f} clears the floor", **common
        )
    if candidate_value > champion_value:
        return PromotionDecision(
            True,
            f"{metric} {candidate_value:.4f} beats champion v{champion_version} "
            f"({champion_value:.4f}) on the same window",
            **common,
        )
    relation = "ties" if candidate_value == champion_value else "does not beat"
    return PromotionDecision(
        False,
        f"{metric} {candidate_value:.4f} {relation} champion v{champion_version} "
        f"({champion_value:.4f}) on the same window; a tie keeps the champion",
        **common,
    )


def _same_window(tags: dict[str, str], windows: SplitWindows) -> bool:
    mine = windows.as_tags()
    return all(tags.get(k) == mine[k] for k in ("test_start", "test_end", "delay_days"))


def _trained_before(tags: dict[str, str], windows: SplitWindows) -> bool:
    cutoff = tags.get("training_cutoff")
    if cutoff is None:
        return False
    test_start = dt.datetime.combine(windows.test_start, dt.time(), dt.UTC)
    return dt.datetime.fromisoformat(cutoff) <= test_start


def gate_version(
    settings: Settings,
    version: str,
    candidate_value: float,
    windows: SplitWindows,
    champion_on_window: Callable[[str], float],
) -> PromotionDecision:
    """Decide on ``version`` against the current champion and move the aliases.

    ``champion_on_window(model_uri)`` scores the champion on ``windows``' test period (called
    only when the champion's recorded assessment is of another window).
    """
    metric = settings.promotion_metric
    floor = settings.promotion_floor
    current = versions.champion(settings)
    current_version = None if current is None else str(current.version)
    if current is not None and current_version == version:
        return PromotionDecision(
            True, "already the champion", metric, candidate_value, version=version
        )
    if current is None:
        decision = promotion_verdict(metric, candidate_value, None, floor)
    elif _same_window(current.tags, windows) and f"test_{metric}" in current.tags:
        value = float(current.tags[f"test_{metric}"])
        decision = promotion_verdict(metric, candidate_value, value, floor, current_version)
    elif _trained_before(current.tags, windows):
        uri = f"models:/{settings.model_name}/{current_version}"
        value = float(champion_on_window(uri))
        decision = promotion_verdict(metric, candidate_value, value, floor, current_version)
    else:
        decision = PromotionDecision(
            False,
            f"champion v{current_version} was trained on data of this test window "
            f"({windows.test_start}..{windows.test_end}): no fair comparison, not promoted",
            metric,
            candidate_value,
            champion_version=current_version,
        )
    decision = PromotionDecision(**{**asdict(decision), "version": version})
    apply_decision(settings, version, decision)
    return decision


def apply_decision(settings: Settings, version: str, decision: PromotionDecision) -> None:
    """Record the decision on the version, then move one alias."""
    c = tracking.client(settings)
    name = settings.model_name
    tags = {
        "gate_decision": decision.alias,
        "gate_reason": decision.reason,
        "gate_metric": decision.metric,
        "gate_candidate_value": repr(float(decision.candidate_value)),
        "gate_champion_value": ""
        if decision.champion_value is None
        else repr(float(decision.champion_value)),
        "gate_champion_version": decision.champion_version or "",
        "gate_at": versions.now(),
    }
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)
    c.update_model_version(name, version, description=f"{decision.alias}: {decision.reason}")
    if not decision.promote:
        c.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
        log.info("%s v%s -> %s: %s", name, version, CHALLENGER_ALIAS, decision.reason)
        return
    found = versions.champion(settings)
    previous = None if found is None else str(found.version)
    if previous is not None and previous != version:
        c.set_model_version_tag(name, version, PREVIOUS_CHAMPION_ALIAS, previous)
        c.set_registered_model_alias(name, PREVIOUS_CHAMPION_ALIAS, previous)
    c.set_registered_model_alias(name, CHAMPION_ALIAS, version)  # the move serving sees
    challenger = versions.version_by_alias(settings, CHALLENGER_ALIAS)
    if challenger is not None and str(challenger.version) == version:
        c.delete_registered_model_alias(name, CHALLENGER_ALIAS)
    versions.append_history(
        settings,
        {
            "event": "promote",
            "version": version,
            "replaced": previous,
            "at": tags["gate_at"],
        },
    )
    log.info("%s v%s -> %s: %s", name, version, CHAMPION_ALIAS, decision.reason)


def rollback(settings: Settings, reason: str = "manual rollback") -> tuple[str, str]:
    """Give ``champion`` back to the version it replaced; returns (from, to) versions."""
    c = tracking.client(settings)
    name = settings.model_name
    current = versions.champion(settings)
    if current is None:
        raise versions.RegistryError(f"{name} has no champion: nothing to roll back")
    rolled_back = str(current.version)
    target = current.tags.get(PREVIOUS_CHAMPION_ALIAS)
    if not target:
        raise versions.RegistryError(
            f"{name} v{rolled_back} replaced no champion: nothing to restore"
        )
    c.set_registered_model_alias(name, CHAMPION_ALIAS, target)  # the one move serving sees
    at = versions.now()
    c.set_model_version_tag(name, rolled_back, "rolled_back_at", at)
    c.set_model_version_tag(name, rolled_back, "rolled_back_reason", reason)
    c.set_model_version_tag(name, target, "restored_at", at)
    # The restored version's own predecessor becomes the next rollback target.
    before = c.get_model_version(name, target).tags.get(PREVIOUS_CHAMPION_ALIAS)
    if before:
        c.set_registered_model_alias(name, PREVIOUS_CHAMPION_ALIAS, before)
    else:
        c.delete_registered_model_alias(name, PREVIOUS_CHAMPION_ALIAS)
    versions.append_history(
        settings,
        {
            "event": "rollback",
            "version": target,
            "replaced": rolled_back,
            "at": at,
            "reason": reason,
        },
    )
    log.info("%s champion rolled back v%s -> v%s (%s)", name, rolled_back, target, reason)
    return rolled_back, target
