"""A CsvExampleGen executor that converts CSV column by column.

TFX's own CsvExampleGen executor reads each file in one DoFn and builds every
tf.Example cell by cell in Python: about 5,000 rows/s on one core, and it
held 4.5 GB at 1.5M rows. This one produces the same examples with Arrow:

- files are cut into byte ranges of whole lines (`RANGE_BYTES`, cut after an
  LF), so that the multi-process runner spreads even one file over its
  workers;
- a first pass infers each column's type as TFX does (int if every non-empty
  value is an int64, else float if every one is a number, else string);
- a second pass parses each range with pyarrow's CSV reader and encodes it
  column by column (`record_batch_to_examples`). An empty value is an empty
  value list, as with TFX; a column that is empty in every row is left out
  (TFX writes it with no type).

The rules shared with the data gate and prediction (the type rule, the
header line) come from formats/csv_rules.py.

Rows are split as TFX's ExampleGen splits them: by TFX's hash of each row's
tf.Example serialized deterministically (features in name order, which is
how this encoder writes them), so a row lands in the same split in every run
and with TFX's stock executor (`beam.fast_paths=false`).

Rows are shuffled within each range (the same order in every run), not
across the whole dataset: TFX's ExampleGen reshuffles every split before
writing it, a GroupByKey that holds the whole dataset in memory on the
DirectRunner (4.7 GiB of RSS at 1.5M rows, the pipeline's peak). The
Trainer's SGD input shuffles again; least squares does not depend on order.

Each range writes its own file in each split (TensorFlow's C++ TFRecord
writer), staged apart and renamed into place: the examples never pass
through Beam one by one, which cost more than encoding them. The files are
gzipped at level 1 rather than zlib's default 6: a third of the time to
write (6 was a fifth of this component's time), files ~30% larger, and as
fast to read. Beside each file, the same rows go into an Arrow file
(`examples_io.write_columns`), which StatisticsGen, Transform and the
Evaluator read rather than decode the tf.Examples.

Records cannot span lines: the data gate (pipeline/input_check.py) refuses
quoted newlines in training data, as TFX's CSV reader does.
"""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import component as base_example_gen
from tfx.components.example_gen import utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.csv_example_gen import component
from tfx.components.util import examples_utils
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact as tfx_artifact
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from tfx_e2e.components import screened_example_gen
from tfx_e2e.components.executors import examples_io
from tfx_e2e.formats import csv_rules
from tfx_e2e.pipeline import worker_marks
# The type rule (TFX's: int, else float, else text), shared with the gate.
from tfx_e2e.formats.csv_rules import (FLOAT, INT, STRING, UNKNOWN,
                                       column_type)

# Bytes of CSV per unit of work: large enough to amortise the per-range
# cost, small enough to keep the parsed range within tens of MB.
RANGE_BYTES = 32 << 20
_ARROW_TYPES = {INT: pa.int64(), FLOAT: pa.float64(), STRING: pa.binary()}

Range = Tuple[str, int, int]  # file, first byte, end byte


def byte_ranges(path: str, range_bytes: int = RANGE_BYTES) -> List[Range]:
  size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
  return [(path, start, min(start + range_bytes, size))
          for start in range(0, max(size, 1), range_bytes)]


def _next_line_start(f, position: int) -> int:
  """The first position >= `position` that follows an LF (or is 0 or EOF)."""
  if position <= 0:
    return 0
  f.seek(position - 1)
  if f.read(1) in (b'\n', b''):
    return f.tell()
  f.readline()
  return f.tell()


def read_range(path: str, start: int, end: int) -> Tuple[bytes, bytes]:
  """(header line, the lines of range [start, end)), line ends kept.

  A range holds the lines from the first one that starts (after an LF) at or
  after `start` to the first one that starts at or after `end`, so that
  consecutive ranges hold every line once; the header is returned apart.
  """
  with FileSystems.open(path, compression_type='uncompressed') as f:
    header, data_start = csv_rules.header_line(f)
    first = max(data_start, _next_line_start(f, start))
    last = max(data_start, _next_line_start(f, end))
    f.seek(first)
    return header, f.read(last - first) if last > first else b''


def _lines(data: bytes) -> List[bytes]:
  """The non-empty lines of `data`, without line ends (LF, CRLF or CR, as
  for pyarrow's reader)."""
  return [line for line in data.splitlines() if line]


# pyarrow's CSV reader, single-threaded: ranges are the unit of parallelism.
# On Python 3.10 each call scans the whole heap (gc.get_referrers, in its
# SignalStopHandler): ~30 ms a call in a worker that holds a model.
_READ_OPTIONS = pa_csv.ReadOptions(use_threads=False)


@functools.lru_cache(maxsize=64)
def _column_names(header: bytes) -> Tuple[str, ...]:
  """The names in a CSV header line, read once per header (per file) in a
  process rather than once per range, as each read scans the heap."""
  return tuple(pa_csv.read_csv(pa.BufferReader(header + b'\n'),
                               read_options=_READ_OPTIONS).column_names)


def parse_range(path: str, start: int, end: int
                ) -> Tuple[List[bytes], Dict[str, pa.Array]]:
  """The range's lines and its columns, every value as text ('' if empty)."""
  header, data = read_range(path, start, end)
  lines = _lines(data)
  try:
    names = _column_names(header)
  except pa.ArrowInvalid as e:
    raise ValueError(f'{path}: unreadable CSV header {header[:200]!r}: {e}'
                     ) from None
  table = pa_csv.read_csv(
      pa.BufferReader(header + b'\n' + data), read_options=_READ_OPTIONS,
      convert_options=csv_rules.as_text(names))
  if table.num_rows != len(lines):
    raise ValueError(
        f'{path}: bytes {start}-{end} hold {len(lines)} lines but '
        f'{table.num_rows} CSV rows (a quoted value spanning lines?)')
  return lines, {name: column.combine_chunks()
                 for name, column in zip(table.column_names, table.columns)}


def range_types(byte_range: Range) -> Dict[str, int]:
  _, columns = parse_range(*byte_range)
  return {name: column_type(values) for name, values in columns.items()}


class MergeTypes(beam.CombineFn):
  """Column -> the most general type seen in any range."""

  def create_accumulator(self) -> Dict[str, int]:
    return {}

  def add_input(self, types, more):
    return self.merge_accumulators([types, more])

  def merge_accumulators(self, accumulators):
    merged = {}
    for types in accumulators:
      for name, kind in types.items():
        merged[name] = max(merged.get(name, UNKNOWN), kind)
    return merged

  def extract_output(self, types):
    return types


def typed_batch(columns: Dict[str, pa.Array],
                types: Dict[str, int]) -> pa.RecordBatch:
  """The rows as tf.Examples hold them, a list column a feature: typed
  values, an empty list for an empty value; UNKNOWN (all-empty) columns left
  out."""
  arrays, names = [], []
  # In name order: a deterministic serialization's, which the split hashes.
  for name in sorted(columns):
    values = columns[name]
    kind = types.get(name, UNKNOWN)
    if kind == UNKNOWN:
      continue
    present = pc.not_equal(values, '')
    typed = pc.cast(values.filter(present), _ARROW_TYPES[kind])
    if kind == FLOAT:  # tf.Example floats are float32, as in TFX
      typed = pc.cast(typed, pa.float32(), safe=False)
    offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum(present.to_numpy(zero_copy_only=False), out=offsets[1:])
    arrays.append(pa.ListArray.from_arrays(pa.array(offsets), typed))
    names.append(name)
  if not arrays:
    raise ValueError('no column has any value')
  return pa.RecordBatch.from_arrays(arrays, names)


# The tf.Example wire format, as `record_batch_to_examples` writes it: an
# Example is field 1 (Features), a Features is field 1 repeated (map
# entries), an entry is its key (field 1) and its Feature (field 2), a
# Feature is one of a BytesList (1), FloatList (2) or Int64List (3), whose
# values are field 1: each its own field in a BytesList, packed in the
# others. Every field here is length-delimited: a tag byte, the length as a
# varint, the bytes.
_VARINT_LIMITS = [np.uint64(1) << np.uint64(7 * k) for k in range(1, 10)]
_BYTES_TAG, _FLOATS_TAG, _INTS_TAG = b'\x0a', b'\x12', b'\x1a'


def _varint_sizes(values: np.ndarray) -> np.ndarray:
  """The size of each int64's varint (10 bytes for a negative one)."""
  unsigned = values.astype(np.int64).view(np.uint64)
  sizes = np.ones(len(unsigned), np.int64)
  for limit in _VARINT_LIMITS:
    sizes += unsigned >= limit
  return sizes


def _varints(values: np.ndarray) -> pa.Array:
  """Each int64's varint (7 bits a byte, low bits first, the high bit set
  on all but the last byte), as a binary array."""
  unsigned = values.astype(np.int64).view(np.uint64)
  sizes = _varint_sizes(values)
  offsets = np.zeros(len(values) + 1, np.int32)
  np.cumsum(sizes, out=offsets[1:])
  data = np.empty(offsets[-1], np.uint8)
  for at in range(int(sizes.max(initial=0))):
    rows = slice(None) if at == 0 else sizes > at
    bits = (unsigned[rows] >> np.uint64(7 * at)) & np.uint64(0x7F)
    data[offsets[:-1][rows] + at] = bits.astype(np.uint8) | np.where(
        sizes[rows] > at + 1, np.uint8(0x80), np.uint8(0))
  return pa.Array.from_buffers(pa.binary(), len(values), [
      None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _varint(value: int) -> bytes:
  return _varints(np.array([value])).to_pylist()[0]


def _binary(value: bytes) -> pa.Scalar:
  return pa.scalar(value, pa.binary())


def _join(*parts) -> pa.Array:
  """The parts (binary arrays or scalars) concatenated row by row."""
  return pc.binary_join_element_wise(*parts, b'')


def _entry_head(key_field: bytes, tag: bytes, list_size: int) -> bytes:
  """A feature's map entry up to its list's content, which is `list_size`
  bytes long."""
  feature_head = tag + _varint(list_size)
  entry = (key_field + b'\x12' + _varint(len(feature_head) + list_size) +
           feature_head)
  return _BYTES_TAG + _varint(len(entry) + list_size) + entry


def _feature_entries(name: str, column: pa.Array
                     ) -> Tuple[pa.Array, np.ndarray]:
  """A list column's map entries (one a row) and their sizes."""
  value_counts = np.diff(column.offsets.to_numpy())
  if column.null_count or value_counts.max(initial=0) > 1:
    raise ValueError(f'{name}: more than one value in a row')
  present = value_counts == 1
  values = column.flatten()
  if not present.all():  # a value a row, null where there is none
    values = values.take(pa.array(np.cumsum(present) - 1, mask=~present))
  key = name.encode()
  key_field = _BYTES_TAG + _varint(len(key)) + key
  if pa.types.is_floating(values.type):
    tag = _FLOATS_TAG
    floats = values.fill_null(0).to_numpy(zero_copy_only=False).astype('<f4')
    head = _entry_head(key_field, tag, 6) + b'\x0a\x04'
    entries = _join(_binary(head), pa.Array.from_buffers(
        pa.binary(4), len(floats), [None, pa.py_buffer(floats)]
    ).cast(pa.binary()))
    sizes = np.full(len(floats), len(head) + 4)
  elif pa.types.is_integer(values.type):
    tag = _INTS_TAG
    ints = values.fill_null(0).to_numpy(zero_copy_only=False)
    int_sizes = _varint_sizes(ints)
    heads = [  # by the size of the value's varint
        _entry_head(key_field, tag, 2 + size) + b'\x0a' + _varint(size)
        for size in range(11)]
    entries = _join(pa.array(heads, pa.binary()).take(int_sizes),
                    _varints(ints))
    sizes = np.array([len(head) for head in heads])[int_sizes] + int_sizes
  else:
    tag = _BYTES_TAG
    strings = values.fill_null(b'').cast(pa.binary())
    lengths = pc.binary_length(strings).to_numpy(
        zero_copy_only=False).astype(np.int64)
    list_sizes = 1 + _varint_sizes(lengths) + lengths
    feature_sizes = 1 + _varint_sizes(list_sizes) + list_sizes
    entry_sizes = (len(key_field) + 1 + _varint_sizes(feature_sizes) +
                   feature_sizes)
    entries = _join(
        _binary(_BYTES_TAG), _varints(entry_sizes),
        _binary(key_field + b'\x12'),
        _varints(feature_sizes), _binary(tag), _varints(list_sizes),
        _binary(_BYTES_TAG), _varints(lengths), strings)
    sizes = 1 + _varint_sizes(entry_sizes) + entry_sizes
  if not present.all():  # an empty list of the column's type
    empty = _entry_head(key_field, tag, 0)
    entries = pc.if_else(pa.array(present), entries, _binary(empty))
    sizes = np.where(present, sizes, len(empty))
  return entries, sizes


def record_batch_to_examples(batch: pa.RecordBatch,
                             typeless: Sequence[str] = ()) -> List[bytes]:
  """The rows of a `typed_batch` as serialized tf.Examples.

  The same examples as tfx-bsl's RecordBatchToExamples (a feature a column,
  an empty list where a row has no value), with the features in the batch's
  column order. Built column by column with Arrow and numpy, where that one
  goes row by row: at 1.5M rows, 5.9 CPU s against its 10.1 s, and this
  component's whole step 27.3 against 31.9 CPU s (BENCHMARKS.md), ~7% of the
  in-memory pipeline's time. Named apart from prediction's
  `examples_for_model`, which types a table for a model's inputs and uses
  tfx-bsl's encoder.

  Args:
    batch: a `typed_batch`.
    typeless: names of columns with no value in any row, each added as a
      feature with no value list (as TFX's CsvExampleGen writes them), in
      name order among the batch's columns, which must then be sorted.
  """
  entries, sizes = [], np.zeros(batch.num_rows, np.int64)
  columns = [(name, column) for name, column in zip(batch.schema.names,
                                                     batch.columns)]
  columns += [(name, None) for name in typeless]
  for name, column in sorted(columns, key=lambda c: c[0]) if typeless else (
      columns):
    if column is None:
      key = name.encode()
      entry = _BYTES_TAG + _varint(len(key)) + key + b'\x12\x00'
      entry = _BYTES_TAG + _varint(len(entry)) + entry
      entries.append(_binary(entry))
      sizes += len(entry)
      continue
    column_entries, column_sizes = _feature_entries(name, column)
    entries.append(column_entries)
    sizes += column_sizes
  return _join(_binary(_BYTES_TAG), _varints(sizes), *entries).to_pylist()


def split_keys(batch: pa.RecordBatch, records: List[bytes],
               typeless: Sequence[str]) -> List[bytes]:
  """What TFX's ExampleGen hashes to split each row: its tf.Example,
  serialized deterministically (features in name order; `typed_batch`'s
  columns are). With no typeless column these are the records themselves."""
  return (record_batch_to_examples(batch, typeless) if typeless
          else records)


def bucket(line: bytes, total_buckets: int) -> int:
  """TFX's hash bucket (base_example_gen_executor._PartitionFn) of a key:
  the same number as its int(hexdigest, 16), without the hex text."""
  return int.from_bytes(hashlib.sha256(line).digest(), 'big') % total_buckets


# gzip level 1 (see the module docstring).
TFRECORD_OPTIONS = tf.io.TFRecordOptions(compression_type='GZIP',
                                         compression_level=1)
STAGING_DIR = '.staging'


def file_name(index: int, count: int) -> str:
  """Range `index` of `count`'s file in a split, as Beam names shards."""
  return f'{write_split.DEFAULT_FILE_NAME}-{index:05d}-of-{count:05d}.gz'


class _WriteRange(beam.DoFn):
  """A byte range -> its tf.Examples, a file in each split directory.

  A file is written under a unique name in the staging directory, then
  renamed into place: a retried range replaces its file whole, and no split
  directory ever holds a partial one.
  """

  def __init__(self, split_dirs: List[str], buckets: Optional[List[int]],
               staging_dir: str):
    self._split_dirs = split_dirs
    self._buckets = buckets  # cumulative hash buckets; None: one split
    self._staging_dir = staging_dir

  def setup(self):
    worker_marks.mark('CsvExampleGen')

  def process(self, numbered_range: Tuple[int, int, Range],
              types: Dict[str, int]) -> Iterator[int]:
    index, count, byte_range = numbered_range
    lines, columns = parse_range(*byte_range)
    batch = typed_batch(columns, types) if lines else None
    records = record_batch_to_examples(batch) if lines else []
    order = np.random.default_rng(byte_range[1]).permutation(len(records))
    if self._buckets is None or not records:
      split_of_row = np.zeros(len(records), int)
    else:
      typeless = sorted(name for name in columns
                        if types.get(name, UNKNOWN) == UNKNOWN)
      split_of_row = np.searchsorted(self._buckets, [
          bucket(key, self._buckets[-1])
          for key in split_keys(batch, records, typeless)], side='right')
    name = file_name(index, count)
    for split, split_dir in enumerate(self._split_dirs):
      rows = order[split_of_row[order] == split]
      staged = os.path.join(self._staging_dir, f'{uuid.uuid4().hex}-{name}')
      with tf.io.TFRecordWriter(staged, TFRECORD_OPTIONS) as writer:
        for row in rows.tolist():
          writer.write(records[row])
      record_file = os.path.join(split_dir, name)
      # The columns file first: a record file in place always has its own.
      if batch is not None:
        examples_io.write_columns(staged + '.arrow', batch.take(rows), staged)
        tf.io.gfile.rename(staged + '.arrow',
                           examples_io.columns_path(record_file),
                           overwrite=True)
      tf.io.gfile.rename(staged, record_file, overwrite=True)
    yield len(records)


def _matching_files(pattern: str) -> List[str]:
  files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
  if not files:
    raise ValueError(f'no CSV file matches {pattern}')
  return files


@beam.ptransform_fn
def _write_examples(pipeline: beam.Pipeline, pattern: str,
                    split_dirs: List[str], buckets: Optional[List[int]],
                    staging_dir: str, label: str):
  """Writes the examples of the CSV files matching `pattern` into
  `split_dirs`; returns the number of rows of each range."""
  ranges = [r for path in _matching_files(pattern) for r in byte_ranges(path)]
  all_ranges = pipeline | f'Ranges[{label}]' >> beam.Create(
      [(index, len(ranges), r) for index, r in enumerate(ranges)])
  types = (all_ranges
           | f'Types[{label}]' >> beam.MapTuple(
               lambda index, count, byte_range: range_types(byte_range))
           | f'MergeTypes[{label}]' >> beam.CombineGlobally(MergeTypes()))
  return (all_ranges
          | f'Spread[{label}]' >> beam.Reshuffle()
          | f'Write[{label}]' >> beam.ParDo(
              _WriteRange(split_dirs, buckets, staging_dir),
              beam.pvalue.AsSingleton(types)))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """CsvExampleGen's executor, column-wise (see the module docstring)."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    raise NotImplementedError('Do writes the examples itself')

  def Do(self, input_dict: Dict[str, List[tfx_artifact.Artifact]],
         output_dict: Dict[str, List[tfx_artifact.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    """TFX's ExampleGen `Do`, without its reshuffle of every split before
    writing, and writing each range's examples itself (see the module
    docstring)."""
    exec_properties = screened_example_gen.screened(exec_properties,
                                                   self._get_tmp_dir)
    self._log_startup(input_dict, output_dict, exec_properties)
    payload_format = exec_properties.get(
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY,
        example_gen_pb2.FORMAT_TF_EXAMPLE)
    file_format = exec_properties.get(
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
        example_gen_pb2.FORMAT_TFRECORDS_GZIP)
    if (payload_format != example_gen_pb2.FORMAT_TF_EXAMPLE or
        file_format not in (example_gen_pb2.FORMAT_TFRECORDS_GZIP,
                            example_gen_pb2.FILE_FORMAT_UNSPECIFIED)):
      raise ValueError('this CsvExampleGen writes tf.Examples in gzipped '
                       'TFRecord files only')
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
        input_config)
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
        output_config)
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    examples = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    split_names = utils.generate_output_split_names(input_config,
                                                    output_config)
    examples.split_names = artifact_utils.encode_split_names(split_names)
    split_dirs = [artifact_utils.get_split_uri([examples], name)
                  for name in split_names]
    staging_dir = os.path.join(examples.uri, STAGING_DIR)
    for directory in split_dirs + [staging_dir] + [
        examples_io.columns_dir(split_dir) for split_dir in split_dirs]:
      tf.io.gfile.makedirs(directory)
    with self._make_beam_pipeline() as pipeline:
      if output_config.split_config.splits:
        # One input split, hashed into the output splits (TFX's rule).
        if output_config.split_config.HasField('partition_feature_name'):
          raise ValueError('partition_feature_name is not supported; rows '
                           'are split by a hash of their line')
        buckets = np.cumsum([s.hash_buckets for s in
                             output_config.split_config.splits]).tolist()
        _ = pipeline | 'Examples' >> _write_examples(  # pylint: disable=no-value-for-parameter
            os.path.join(input_base, input_config.splits[0].pattern),
            split_dirs, buckets, staging_dir, 'all')
      else:
        for name, split_dir, split in zip(split_names, split_dirs,
                                          input_config.splits):
          _ = pipeline | f'Examples[{name}]' >> _write_examples(  # pylint: disable=no-value-for-parameter
              os.path.join(input_base, split.pattern), [split_dir], None,
              staging_dir, name)
    tf.io.gfile.rmtree(staging_dir)
    examples_utils.set_payload_format(examples, payload_format)
    examples_utils.set_file_format(
        examples, write_split.to_file_format_str(file_format))


class CsvExampleGen(component.CsvExampleGen):
  """TFX's CsvExampleGen (same spec, artifacts and id) with this executor.

  It also passes on `custom_config` of the spec, which TFX's CsvExampleGen
  does not take: the pipeline puts the digest of this module's code there,
  in the component's cache key.
  """
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

  def __init__(self, input_base: str, input_config: example_gen_pb2.Input,
               output_config: example_gen_pb2.Output,
               custom_config: example_gen_pb2.CustomConfig):
    base_example_gen.FileBasedExampleGen.__init__(  # pylint: disable=non-parent-init-called
        self, input_base=input_base, input_config=input_config,
        output_config=output_config, custom_config=custom_config)
