"""YAML loading that refuses a key written twice in one mapping.

PyYAML keeps the last of two equal keys without a word, so a recipe that sets ``train.lr`` twice
trains with whichever comes last; here that is an error naming the key and both lines.
"""

from __future__ import annotations

from typing import Any

import yaml

from odmaug.errors import OdmaugError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping lists ``key`` twice: first on ``first_line``, again on ``line`` (1-based)."""

    def __init__(self, key: Any, first_line: int, line: int) -> None:
        super().__init__(f"key '{key}' appears twice (lines {first_line} and {line})")
        self.key, self.first_line, self.line = key, first_line, line


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises :class:`DuplicateKeyError` for a repeated mapping key.

    Merge keys (``<<: *base``) are not duplicates: keys written beside a merge override it on purpose.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise DuplicateKeyError(key, first, line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def strict_safe_load(text: str, origin: str) -> Any:
    """``yaml.safe_load(text)``, but a duplicated key is an error.

    Raises:
        OdmaugError: ``"<origin>: key 'K' appears twice (lines A and B)"``.
        yaml.YAMLError: any other YAML problem (the caller reports it with its line).
    """
    try:
        return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as err:
        raise OdmaugError(f"{origin}: {err}") from None
