"""The pairs store: one SQLite file (``Settings.db_path``) holding collections, pairs, labels and run scores.

Layout
  collections  an imported dataset, hand-written pairs, chat votes or synthetic pairs (``KINDS``)
  pairs        small per-pair columns only (collection, version links, language, source, split, lengths,
               hashes), so filtered scans and paging touch compact rows; texts live in ``pair_texts``
  pair_texts   prompt (JSON messages), chosen, rejected, meta (JSON)
  labels       one verdict per (pair version chain, annotator); a new verdict replaces the annotator's old one
  scores       a run's implicit-reward margin per pair, for "lowest margin first"
  rated_answers  unpaired feedback (KTO): prompt (JSON messages), one completion, desirable 0/1, meta
  pairs_fts    word index (FTS5, contentless) of the texts with their CJK characters left out; a pair with no
               word left (most Chinese pairs) has no row there (``ingest.has_words``)
  search_*     the CJK substring index (``ctllm.pairs.cjk_index``): segments of bulk-imported pairs, and
               ``search_unindexed``, pairs added one at a time (checked by a scan until FOLD_AT of them are
               folded into a segment)

Versions: ``edit_pair`` never changes a row. It adds a new pair whose ``parent_id`` is the edited one and whose
``root_id`` is the chain's first pair, and marks the old row ``is_latest = 0``. Browsing, search and export see
latest versions only; labels belong to the chain (``root_id``), so a verdict survives a typo fix.

Search (see ``ctllm.pairs.search``): a query holding a CJK character is an exact substring search (candidates
from the CJK index, checked on the text); other queries match words through FTS5 (the last word as a prefix);
queries with no letter or digit use a LIKE scan.

Concurrency: one connection per thread, WAL, ``BEGIN IMMEDIATE`` for every write (no read-to-write upgrade
deadlocks), a busy timeout, short transactions. ``synchronous=NORMAL`` in WAL mode: a committed write survives
the process being killed (not a power cut).

Modules: ``store`` (``Store``: opening, collections), ``connection`` (connections, write transactions),
``schema`` (tables, migrations), ``ingest`` (adding and editing pairs), ``reading`` (pairs by id, version chains,
resolved pairs), ``query`` (planning, paging, search), ``labels`` (labels, scores, statistics inputs),
``rated`` (unpaired rated answers), ``records`` (what the store returns). Architecture overview: docs/architecture.md.
"""

from ctllm.pairs.store.ingest import BATCH, BULK_INDEX_MIN, FOLD_AT, Prepared, prepare_rows
from ctllm.pairs.store.query import LABEL_STATES, LISTED_CANDIDATES, PAGE_SIZE, SORTS, Page, PairQuery, Plan, plan_query
from ctllm.pairs.store.records import Collection, DuplicatePair, Label, LabelProgress, StoredPair, StoredRated
from ctllm.pairs.store.schema import FTS_HASH_BYTES, SCHEMA_VERSION
from ctllm.pairs.store.store import KINDS, PairStore, Store

__all__ = [
    "BATCH",
    "BULK_INDEX_MIN",
    "FOLD_AT",
    "FTS_HASH_BYTES",
    "KINDS",
    "LABEL_STATES",
    "LISTED_CANDIDATES",
    "PAGE_SIZE",
    "SCHEMA_VERSION",
    "SORTS",
    "Collection",
    "DuplicatePair",
    "Label",
    "LabelProgress",
    "Page",
    "PairQuery",
    "PairStore",
    "Plan",
    "Prepared",
    "Store",
    "StoredPair",
    "StoredRated",
    "plan_query",
    "prepare_rows",
]
