"""The data stage's core: sources, the synthetic task, dedup/decontamination, and the dataset builder.

    from r1_pipeline.data import build_datasets, write_datasets
    result = build_datasets(cfg)          # everything in memory: rows and stats
    write_datasets(result)                # outputs/data/... in one atomic step

Submodules: `records` (the normalized schema), `synthetic` (generator and corpus renderers), `sources`
(JSONL/Parquet/Hugging Face readers and answer extraction), `dedup` (exact/near dedup, decontamination),
`build` (the stage logic).
"""

from r1_pipeline.data.build import build_datasets, summary, write_datasets
from r1_pipeline.data.records import ColdStartExample, CorpusDocument, Problem, SourceRecord
from r1_pipeline.data.sources import DataError, load_source

__all__ = [
    "ColdStartExample",
    "CorpusDocument",
    "DataError",
    "Problem",
    "SourceRecord",
    "build_datasets",
    "load_source",
    "summary",
    "write_datasets",
]
