"""The budget-correlated partitioner (label skew that follows the clients' budgets), a
flwr-datasets ``Partitioner``: imported only where a partition is built (``tasks.partitioners``).
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import Partitioner


class BudgetCorrelatedPartitioner(Partitioner):
    """Label skew that follows the clients' resource budgets: the cheap devices hold the unusual data.

    Clients whose ratio is below the largest are *weak*, the others *strong*. The upper half of the
    classes (``label >= num_classes // 2``) has the weak clients as its home group, the lower half
    the strong ones. Each sample goes, with probability ``correlation``, to a uniformly drawn client
    of its class's home group, else to a uniformly drawn client of any group. At correlation 0 the
    split is IID; at 1 the strong clients never see the weak clients' classes and vice versa (a
    run that drops the weak clients then cannot learn half of the classes). When every client has
    the same ratio there is one group and the split is IID.
    """

    def __init__(self, ratios: tuple[float, ...], correlation: float, partition_by: str = "label",
                 seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"budget-correlation={correlation} must lie in [0, 1]")
        self.ratios = tuple(ratios)
        self.correlation = correlation
        self.partition_by = partition_by
        self.seed = seed
        self._assignment: np.ndarray | None = None

    @property
    def num_partitions(self) -> int:
        return len(self.ratios)

    def assignment(self) -> np.ndarray:
        """The partition of every row of the dataset."""
        if self._assignment is None:
            labels = np.asarray(self.dataset[self.partition_by], dtype=np.int64)
            ratios = np.asarray(self.ratios)
            weak = np.flatnonzero(ratios < ratios.max())
            strong = np.flatnonzero(ratios >= ratios.max())
            rng = np.random.default_rng([self.seed, 4])
            num_classes = int(labels.max()) + 1 if len(labels) else 1
            anywhere = rng.integers(len(ratios), size=len(labels))

            def drawn_from(group: np.ndarray) -> np.ndarray:
                return group[rng.integers(len(group), size=len(labels))] if len(group) else anywhere

            in_home = np.where(labels >= num_classes // 2, drawn_from(weak), drawn_from(strong))
            at_home = rng.random(len(labels)) < self.correlation
            self._assignment = np.where(at_home, in_home, anywhere)
        return self._assignment

    def load_partition(self, partition_id: int) -> Dataset:
        return self.dataset.select(np.flatnonzero(self.assignment() == partition_id))
