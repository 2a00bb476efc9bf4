"""Built-in synthetic data sets, rendered on first use and cached under a key of their arguments."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scratchlab.data.synth.params import params_to_dict
from scratchlab.data.synth.writer import (
    GENERATOR_VERSION,
    load_synthetic_index,
    resolve_params,
    write_synthetic_dataset,
)
from scratchlab.data.types import SampleIndex

log = logging.getLogger(__name__)


class SyntheticSource:
    """Synthetic ``text`` (printed codes) or ``metal`` (rolled steel) scratch images.

    The images live in ``root/<kind>-<key>``, where ``key`` hashes every argument, the full
    parameter set (defaults included) and the generator version; an existing folder is reused.
    """

    def __init__(
        self,
        kind: str,
        root: str | Path,
        count: int,
        bad_fraction: float,
        seed: int,
        params: dict[str, Any] | DictConfig | None = None,
    ) -> None:
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=True)
        self.kind = kind
        self.root = Path(root)
        self.count = int(count)
        self.bad_fraction = float(bad_fraction)
        self.seed = int(seed)
        self.params: dict[str, Any] = dict(params or {})
        self._full_params = params_to_dict(resolve_params(kind, self.params))

    @property
    def key(self) -> str:
        """Short hash of everything that decides the rendered files."""
        spec = {"kind": self.kind, "count": self.count, "bad_fraction": self.bad_fraction, "seed": self.seed,
                "params": self._full_params, "version": GENERATOR_VERSION}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def cache_dir(self) -> Path:
        """Folder that holds (or will hold) this data set."""
        return self.root / f"{self.kind}-{self.key}"

    def load(self) -> SampleIndex:
        """Index the cached data set, rendering it first if it is not there yet."""
        folder = self.cache_dir
        if (folder / "synth.json").is_file():
            return load_synthetic_index(folder)
        log.info("generating %d %s images into %s", self.count, self.kind, folder)
        return write_synthetic_dataset(
            folder, self.kind, self.count, self.bad_fraction, self.seed, self.params, progress=True
        )
