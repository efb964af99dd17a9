"""Stand-in (to be replaced at merge): the long-tail report spec, the keys that do not define a method, and the
data identity."""

from __future__ import annotations

from typing import Any

__all__ = ["REPORT", "GROUP_IGNORE", "data_identity"]

REPORT: dict[str, Any] = {
    "kind": "longtail",
    "title": "Long-tailed classification",
    "name_keys": ["loss", "drw", "transform", "sd"],
    "context_keys": ["dataset", "imbalance_ratio", "profile", "backbone", "epochs", "sampler"],
    "columns": [{"name": "SI", "cell": "mean_std", "key": "test/acc"}],
    "legend": "",
    "plot": "per_class",
}
GROUP_IGNORE: frozenset[str] = frozenset({"data_root", "download", "eval_every", "grid_loss", "grid_transform"})


def data_identity(dataset: str, files_digest: str | None = None) -> dict[str, Any]:
    return {} if files_digest is None else {"files": files_digest}
