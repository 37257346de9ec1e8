"""AllowedRoots: the directories a node may read checkpoints and bags from and write students into.

Any client on the ROS domain can name paths: a swap's checkpoint, a distillation job's bags,
teacher, dataset config and output directory. Each is resolved (symlinks followed, `..` removed)
and refused unless the result lies under a root, so a link or a relative path cannot reach out.
The checked path is the resolved one: later uses read what was checked, not what a link
points at by then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from snapflow_ros.errors import ConfigError


class PathNotAllowedError(ConfigError):
    """A path names a file outside the allowed roots; the message names the field, the path and the roots."""


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


@dataclass(frozen=True)
class AllowedRoots:
    roots: tuple[Path, ...]

    @classmethod
    def of(cls, roots: Iterable[str | Path]) -> AllowedRoots:
        """Resolved, empty entries dropped (a root that does not exist yet still counts)."""
        return cls(tuple(dict.fromkeys(_resolved(r) for r in roots if str(r))))

    def check(self, path: str | Path, field: str) -> Path:
        """The resolved path; PathNotAllowedError when it is outside every root."""
        resolved = _resolved(path)
        if not any(resolved == root or root in resolved.parents for root in self.roots):
            roots = [str(r) for r in self.roots] or "none (set the 'allowed_roots' parameter)"
            via = f" (resolves to {resolved})" if str(resolved) != str(path) else ""
            raise PathNotAllowedError(f"{field} {str(path)!r}{via} is outside allowed_roots {roots}")
        return resolved
