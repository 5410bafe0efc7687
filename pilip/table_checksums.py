"""Checksums of a table's decoded content, kept in its Parquet file metadata.

Parquet page CRCs (written and verified by :mod:`pilip.tables`) cover the data pages but not
the footer, which holds the schema, the column chunks' encodings, offsets and row counts, and
pilip's metadata. A flipped bit there can read back as other numbers (an energy column read
with another encoding), other field names or types, or another provenance, without any error.
So every table also carries one digest per column of its *decoded* values and one of its
schema and metadata; reading recomputes them.

Digests are of values, not bytes: the same table gives the same digests whatever its chunking,
null-slot contents or Parquet encoding. A NaN counts as one NaN whatever its payload bits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

META_CHECKSUMS = b"pilip.checksums"  # JSON {column name: hex digest, "": schema + metadata}
SCHEMA_KEY = ""  # the entry for the schema and file metadata (no column has an empty name)
ARROW_SCHEMA = b"ARROW:schema"  # Arrow's serialised copy of the schema, read into the schema
IGNORED_METADATA = (META_CHECKSUMS, ARROW_SCHEMA)


def _hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)


def type_text(kind: pa.DataType) -> str:
    """``kind`` as text without the names of list items (Arrow's ``item`` is Parquet's
    ``element`` after a round trip)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        prefix = "large_list" if pa.types.is_large_list(kind) else "list"
        item = kind.value_field
        return f"{prefix}<{type_text(item.type)}{'' if item.nullable else ' not null'}>"
    if pa.types.is_map(kind):  # Parquet names a map's entries after its column
        return f"map<{type_text(kind.key_type)}, {type_text(kind.item_type)}>"
    if pa.types.is_fixed_size_list(kind):
        item = kind.value_field
        text = f"{type_text(item.type)}{'' if item.nullable else ' not null'}"
        return f"fixed_size_list<{text}>[{kind.list_size}]"
    if pa.types.is_struct(kind):
        fields = ", ".join(
            f"{f.name}: {type_text(f.type)}{'' if f.nullable else ' not null'}" for f in kind
        )
        return f"struct<{fields}>"
    return str(kind)


def _update_array(h: hashlib.blake2b, array: pa.Array) -> None:
    """Feed ``array``'s values (not its buffers) into ``h``."""
    kind = array.type
    h.update(f"{type_text(kind)}|{len(array)}|{array.null_count}|".encode())
    if pa.types.is_dictionary(kind):
        _update_array(h, array.dictionary_decode())
        return
    if array.null_count:
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        h.update(np.packbits(valid).tobytes())
    if pa.types.is_map(kind):  # Arrow cannot flatten a map: by its Python values
        h.update(repr(array.to_pylist()).encode())
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = pc.fill_null(pc.list_value_length(array), 0)
        h.update(lengths.to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        _update_array(h, array.flatten())  # the values of valid rows, slicing undone
    elif pa.types.is_fixed_size_list(kind):
        _update_array(h, array.flatten())
    elif pa.types.is_struct(kind):
        for i in range(kind.num_fields):
            _update_array(h, pc.struct_field(array, [i]))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        texts = pc.fill_null(array, "").to_pylist()
        h.update(np.array([len(t.encode()) for t in texts], dtype=np.int64).tobytes())
        h.update("".join(texts).encode())
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        blobs = pc.fill_null(array, b"").to_pylist()
        h.update(np.array([len(b) for b in blobs], dtype=np.int64).tobytes())
        h.update(b"".join(blobs))
    elif pa.types.is_floating(kind):
        values = pc.fill_null(array, 0.0).to_numpy(zero_copy_only=False)
        h.update(np.where(np.isnan(values), np.nan, values).tobytes())
    elif pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_temporal(kind):
        filled = pc.fill_null(array, pa.scalar(0 if not pa.types.is_boolean(kind) else False))
        h.update(np.ascontiguousarray(filled.to_numpy(zero_copy_only=False)).tobytes())
    else:  # types pilip does not write: by their Python values
        h.update(json.dumps(array.to_pylist(), default=str).encode())


def column_digest(column: pa.ChunkedArray | pa.Array) -> str:
    """The digest of one column's values (hex)."""
    h = _hasher()
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    merged = pa.concat_arrays(chunks) if chunks else pa.array([], type=column.type)
    _update_array(h, merged)
    return h.hexdigest()


def schema_digest(schema: pa.Schema) -> str:
    """The digest of the field names, types, nullability and field metadata, and of the file
    metadata (but the checksums themselves and Arrow's serialised copy of the schema)."""
    h = _hasher()
    for field in schema:
        h.update(f"{field.name}|{type_text(field.type)}|{field.nullable}|".encode())
        h.update(repr(sorted((field.metadata or {}).items())).encode())
    items = sorted((k, v) for k, v in (schema.metadata or {}).items() if k not in IGNORED_METADATA)
    h.update(repr(items).encode())
    return h.hexdigest()


def checksums(table: pa.Table) -> bytes:
    """The ``pilip.checksums`` metadata value for ``table`` as it will be written."""
    record = {SCHEMA_KEY: schema_digest(table.schema)}
    record.update({name: column_digest(table.column(name)) for name in table.column_names})
    return json.dumps(record, sort_keys=True).encode()


def recorded(schema: pa.Schema) -> dict[str, str] | None:
    """The checksums recorded in ``schema``'s metadata; None for a table written before
    checksums. ValueError when the record itself is unreadable."""
    raw = (schema.metadata or {}).get(META_CHECKSUMS)
    if raw is None:
        return None
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise ValueError("checksums are not a JSON object")
    return record


def schema_matches(record: dict[str, str], schema: pa.Schema) -> bool:
    """Whether ``schema`` (the file's whole schema, with its metadata) is the one recorded."""
    return record.get(SCHEMA_KEY) == schema_digest(schema)


def mismatched_columns(
    record: dict[str, str], table: pa.Table, columns: Iterable[str]
) -> list[str]:
    """The ``columns`` of ``table`` whose values disagree with the ``record``."""
    return [name for name in columns if record.get(name) != column_digest(table.column(name))]
