"""Content hashes for the delta check, and the fingerprint of everything that shapes a job's output.

Hashes are taken on the *raw* record (before validation) so that an unchanged item costs one
serialisation and one hash, never a validation; a record whose connector gives a ``digest`` (a hash of the
row as the POS wrote it) costs not even that. A hash is the 64-bit XXH3 of the record as JSON, as 16 hex
digits: it only has to tell an item's new version from its previous one (not resist crafted collisions:
whoever could craft them writes the POS data anyway), and the odds of a collision are 2^-64 per change.

The fingerprint covers what turns a raw record into what the destination receives; when it changes, every
stored hash is stale and everything is re-sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from importlib import metadata
from typing import Any

import orjson
import xxhash

from grocerysync.core.jobs import JobSpec
from grocerysync.core.results import RawRecord

#: Bump when the way records are hashed changes, so every store is refreshed once. 3: XXH3 instead of BLAKE2b.
HASH_VERSION = 3
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    # orjson knows dicts, lists, str, numbers, datetimes; connectors may also hand over these.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if not isinstance(value, tuple) else list(value)
    return str(value)


def record_hashes(
    records: Mapping[str, RawRecord],
    *,
    _dumps: Any = orjson.dumps,
    _hash: Any = xxhash.xxh3_64_hexdigest,
    _options: int = _OPTIONS,
) -> dict[str, str]:
    """``{key: the record's digest}``: the connector's ``digest`` when it gave one, else the hash of
    ``record.data`` (16 hex digits, independent of the data's key order)."""
    return {
        key: record.digest or _hash(_dumps(record.data, default=_default, option=_options))
        for key, record in records.items()
    }


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "0"


def job_fingerprint(job: JobSpec) -> str:
    """A hex digest of the job's mapping, filters, transforms, destination and the core version.

    Source settings are left out on purpose: what the POS returns is already in each record's hash.
    Secrets are left out too: they never shape the items. Plugin versions are left out so that a plugin
    upgrade does not re-send a whole catalogue to a rate-limited platform; run with ``--full`` when an
    upgrade changes what a plugin writes.
    """
    shape = {
        "hash_version": HASH_VERSION,
        "core": _version("grocerysync-core"),
        "mapping": job.mapping.model_dump(mode="json"),
        "filters": [f.model_dump(mode="json") for f in job.filters],
        "transforms": [t.model_dump(mode="json") for t in job.transforms],
        "destination": {
            "plugin": job.destination.plugin,
            "config": job.destination.config,
        },
    }
    return hashlib.blake2b(orjson.dumps(shape, default=_default, option=_OPTIONS), digest_size=16).hexdigest()
