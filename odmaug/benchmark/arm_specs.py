"""How ``benchmark.arms`` names arms: ``<kind>``, ``<kind>:<argument>`` (``external:sg=/data/sg``)
and ``<arm>+<remedy>`` (``odm+corn``), read against the arm registry
(:data:`odmaug.benchmark.arms.ARMS`) once every module that registers arms is loaded: the
built-in arms (:mod:`~odmaug.benchmark.arms`), ``external`` (:mod:`~odmaug.benchmark.externals`)
and the cheap remedies (:mod:`~odmaug.benchmark.remedies`).

A combination ``<arm>+<remedy>`` is ``<arm>`` (its training table, generator, synthetic images and
synthesis mode: the same store folders) trained with the remedy's classifier options. The remedy
is the text after the last ``+``; ``<arm>`` is any arm without options of its own other than
``real`` (``real+<remedy>`` is ``<remedy>``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import odmaug.benchmark.externals  # noqa: F401  (registers external:<name>=<path>)
import odmaug.benchmark.remedies  # noqa: F401  (registers the rare-grade remedies)
from odmaug.benchmark.arms import ARMS, Arm
from odmaug.config import Recipe
from odmaug.errors import OdmaugError


def parse_arm(spec: str) -> Arm:
    """``dm`` -> the DM arm; ``external:sg=/data/sg`` -> the external kind with argument ``sg=/data/sg``;
    ``odm+corn`` -> :func:`combined_arm`.

    Raises:
        OdmaugError: a kind that is not registered, or a combination that cannot be made.
    """
    if (combined := combined_arm(spec)) is not None:
        return combined
    name, sep, argument = spec.partition(":")
    if name not in ARMS:
        known = ", ".join(f"{k.name} ({k.summary})" for k in ARMS.values())
        raise OdmaugError(f"unknown benchmark arm '{spec}'; known: {known}")
    return Arm(spec, ARMS.get(name), argument if sep else None)


def check_arm_spec(spec: str) -> None:
    """Check how ``benchmark.arms`` names an arm, before any work (nothing is read).

    Raises:
        ValueError: a kind that is not registered, or an argument its kind does not take
            (``external`` needs ``<name>=<path>``; the others take none), or a bad combination.
    """
    if check_combined_spec(spec):
        return
    name, sep, argument = spec.partition(":")
    kind = ARMS.get(name) if name in ARMS else None
    if kind is None:
        well_formed = False
    elif kind.images is None:
        well_formed = not sep
    else:
        label, equals, path = argument.partition("=")
        well_formed = bool(label and equals and path)
    base, plus, remedy = spec.rpartition("+")
    if not well_formed and plus and base:  # <arm>+<something that is not a remedy>
        remedies = ", ".join(k.name for k in ARMS.values() if k.training)
        raise ValueError(f"unknown remedy '{remedy}' in arm '{spec}' (remedies: {remedies})")
    if not well_formed:
        usage = ", ".join(k.name if k.images is None else f"{k.name}:<name>=<path>" for k in ARMS.values())
        usage += ", <arm>+<remedy> (e.g. odm+corn)"
        raise ValueError(f"unknown arm '{spec}' (use {usage})")


def generator_recipe(recipe: Recipe, arm: str) -> Recipe:
    """The recipe the generator of arm ``arm`` (``dm``, ``odm``) trains with."""
    generator = parse_arm(arm).kind.generator
    if generator is None:
        raise OdmaugError(f"benchmark arm {arm} trains no generator")
    return generator.recipe(recipe)


def _split(spec: str) -> Optional[tuple[str, str]]:
    """``odm+corn`` -> (``odm``, ``corn``); None when the text after the last ``+`` names no remedy."""
    base, plus, remedy = spec.rpartition("+")
    if not plus or remedy not in ARMS or not ARMS.get(remedy).training:
        return None
    return base, remedy


def _check_base(spec: str, base: str, base_kind_training: bool) -> None:
    if base_kind_training or base.partition(":")[0] == "real":
        raise ValueError(f"arm '{spec}': '{base}' cannot take a remedy (combine a remedy with an image arm "
                         "such as odm, dm-translate or external:<name>=<path>; real+<remedy> is <remedy>)")


def check_combined_spec(spec: str) -> bool:
    """Whether ``spec`` is ``<arm>+<remedy>`` (checked as :func:`~odmaug.benchmark.arms.check_arm_spec`).

    Raises:
        ValueError: a malformed ``<arm>``, or one that cannot take a remedy (``real``, a remedy).
    """
    parts = _split(spec)
    if parts is None:
        return False
    try:
        check_arm_spec(parts[0])
    except ValueError as err:
        raise ValueError(f"arm '{spec}': {err}") from None
    name = parts[0].partition(":")[0]
    _check_base(spec, parts[0], name not in ARMS or bool(ARMS.get(name).training))  # not in ARMS: a combination
    return True


def combined_arm(spec: str) -> Optional[Arm]:
    """The arm ``<arm>+<remedy>`` names: ``<arm>``'s kind (table, generator, images, synthesis)
    with the remedy's ``training`` options, label ``<arm's label>+<remedy>``; None for a spec
    without a remedy suffix.

    Raises:
        OdmaugError: an unknown ``<arm>``, or one that cannot take a remedy.
    """
    parts = _split(spec)
    if parts is None:
        return None
    base = parse_arm(parts[0])
    try:
        _check_base(spec, parts[0], bool(base.kind.training))
    except ValueError as err:
        raise OdmaugError(f"benchmark {err}") from None
    remedy = ARMS.get(parts[1])
    kind = replace(base.kind, name=f"{base.kind.name}+{remedy.name}", training=remedy.training,
                   summary=f"{base.kind.summary}; trained as {remedy.name} ({remedy.summary})")
    return Arm(spec, kind, base.argument, remedy.name)
