"""What the batch (`predict`) and streaming (`stream`) jobs share: CSV rows
to serialized tf.Examples typed as the model reads them, dead letters, and a
RunInference model handler that says which model version answered and can
follow the newest version in a TF Serving model base path.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.ml.inference import base as inference_base
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import tensorflow as tf
from tfx_bsl.coders import example_coder

from tfx_e2e.formats import csv_rules
from tfx_e2e.serving.models import load_newest_version, VersionWatch

_log = logging.getLogger(__name__)


def _load_for_prediction(model_dir: str):
  """Loads a version as the prediction jobs use it: (serving_default's
  function, its input name, the raw input types from serving_raw)."""
  model = tf.saved_model.load(model_dir)
  for name in ('serving_default', 'serving_raw'):
    if name not in model.signatures:
      raise ValueError(f'{model_dir}: the model has no {name} signature')
  function = model.signatures['serving_default']
  inputs = function.structured_input_signature[1]
  if len(inputs) != 1 or next(iter(inputs.values())).dtype != tf.string:
    raise ValueError(f'{model_dir}: serving_default must take one tensor '
                     'of serialized tf.Examples')
  raw = model.signatures['serving_raw'].structured_input_signature[1]
  return function, next(iter(inputs)), {
      name: spec.dtype for name, spec in raw.items()}


def pick_version(base_path: str) -> Tuple[str, Dict[int, str]]:
  """The newest version under a model base path that loads, as `serve`
  picks it (tfx_e2e.serving.models.VersionWatch's rule).

  Returns:
    (its directory, {newer version skipped: why}).

  Raises:
    FileNotFoundError: no version under `base_path` loads.
  """
  version, _, skipped = load_newest_version(base_path, _load_for_prediction)
  return str(Path(base_path) / str(version)), skipped


def latest_version_dir(base_path: str) -> str:
  """The directory of the newest version that loads (see pick_version)."""
  return pick_version(base_path)[0]


def model_input_types(model_dir: str) -> Dict[str, tf.dtypes.DType]:
  """The raw features the model reads, and their types (from serving_raw).

  Raises:
    PredictionInputError: `model_dir` is not a model the prediction jobs use
      (missing, not a SavedModel, or without the signatures they call).
  """
  try:
    return _load_for_prediction(model_dir)[2]
  except (OSError, ValueError, tf.errors.OpError) as e:
    message = getattr(e, 'message', None) or str(e)
    raise PredictionInputError(f'cannot use the model {model_dir}: '
                               f'{message.strip().splitlines()[0]}') from None


class PredictionInputError(ValueError):
  """Input files that a prediction job must refuse; the message says
  which and what to do."""


class MissingColumnsError(PredictionInputError):
  """CSV files lack columns the model reads."""

  def __init__(self, missing: Dict[str, List[str]]):
    """`missing`: {file ('' for this one): the columns it lacks}."""
    self.missing = dict(missing)
    shown = list(self.missing.items())[:5]
    files = '; '.join(f'{path + " has " if path else ""}no column '
                      f'{", ".join(map(repr, columns))}'
                      for path, columns in shown)
    if len(self.missing) > len(shown):
      files += f'; and {len(self.missing) - len(shown)} more files'
    super().__init__(
        f'{files}: the model reads it (a value may be empty in some rows, '
        'but not a whole column); add it, or pass --allow-missing-columns '
        'to predict without it (the model then imputes it in every row)')


def missing_columns(header: Sequence[str],
                    input_types: Dict[str, tf.dtypes.DType]) -> List[str]:
  """The model's raw features that a CSV header lacks, in the model's
  order, a header name standing for its valid model name as in training
  (`csv_rules.feature_names`). Columns the model does not read (the
  label, others) do not matter."""
  present = set(csv_rules.feature_names(header))
  return [name for name in input_types if name not in present]


@dataclasses.dataclass
class CsvTable:
  """The rows of one CSV file, column by column, all values as text."""
  header: List[str]
  columns: Dict[str, pa.Array]   # one string array per column
  line_numbers: np.ndarray       # the file line of each row
  bad_rows: List[Tuple[int, str, str]]  # (line, raw line, error)
  _lines: List[bytes]
  rules: csv_rules.CsvRules = csv_rules.CsvRules()

  def __len__(self) -> int:
    return len(self.line_numbers)

  def raw(self, line: int) -> str:
    return self._lines[line - 1].decode('utf-8')

  def _column(self, name: str, header_first: bool) -> Optional[pa.Array]:
    """The column a name stands for: by its header name, or by the model
    name its header name makes (`csv_rules.feature_names`; read_csv
    refuses a header in which two columns make one). A model input is
    looked up by model name only: `a_b` may be another column's header
    name."""
    if header_first and name in self.columns:
      return self.columns[name]
    names = csv_rules.feature_names(self.header)
    return self.columns.get(self.header[names.index(name)]) if (
        name in names) else None

  def has(self, name: str) -> bool:
    """Whether the file has the column `name` (a header or model name)."""
    return self._column(name, header_first=True) is not None

  def values(self, name: str) -> List[str]:
    """A column's values as the file has them ('' in every row for a
    column the file lacks); `name` as a setting names it (the header
    first)."""
    column = self._column(name, header_first=True)
    return column.to_pylist() if column is not None else [''] * len(self)

  def input_values(self, name: str) -> Optional[pa.Array]:
    """The values of the model input `name` as training read them: spaces
    trimmed, a missing-value marker empty; None if the file lacks it."""
    column = self._column(name, header_first=False)
    return None if column is None else self.rules.cleaned(column)


_LINE_BREAK = r'\r\n|\r|\n'


def read_csv(data: bytes,
             rules: csv_rules.CsvRules = csv_rules.CsvRules()
             ) -> CsvTable:
  """Parses a CSV file with pyarrow's reader. Ragged rows are bad rows
  with their line; blank lines are skipped; a quoted value may span lines;
  the delimiter is the rules' (or detected as for training). A ValueError
  for a file that cannot be read as CSV at all."""
  try:
    data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ValueError(f'not UTF-8 text: {e}') from None
  data = csv_rules.without_bom(data)
  # Lines end at \n, \r\n or a lone \r, as for pyarrow's reader.
  lines = data.splitlines()
  delimiter = csv_rules.delimiter_of(
      lines[0].decode('utf-8') if lines else '', rules.delimiter,
      [line.decode('utf-8')
       for line in lines[1:csv_rules.DELIMITER_SAMPLE]])
  try:
    header = csv_rules.parse_header(lines[0].decode('utf-8'),
                                    delimiter) if lines else []
  except csv.Error as e:
    raise ValueError(f'malformed CSV header: {e}') from None
  # Two columns that make one model input name: which is the input?
  csv_rules.check_header(Path('header'), header)
  blank = np.array([not line.strip() for line in lines] + [True])
  if not header or blank[1:].all():
    return CsvTable(header, {}, np.zeros(0, np.int64), [], lines, rules)
  invalid = {}  # record number (the header is 1) -> (text, error)

  def skip(row):
    invalid[row.number] = (row.text, f'{row.actual_columns} fields, but '
                           f'the header has {row.expected_columns}')
    return 'skip'

  try:
    table = pa_csv.read_csv(
        pa.BufferReader(data),  # not a Python file: see input_check
        read_options=pa_csv.ReadOptions(use_threads=False),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=skip,
                                          newlines_in_values=True,
                                          delimiter=delimiter),
        convert_options=csv_rules.as_text(header))
  except pa.ArrowInvalid as e:
    raise ValueError(f'malformed CSV: {e}') from None
  # pyarrow's own header parse names the columns. Where it differs from
  # ours (odd quoting), a column may have been typed by inference: back to
  # text, with '' for nulls.
  header = table.column_names
  columns = {}
  for name, column in zip(header, table.columns):
    column = column.combine_chunks()
    if column.type != pa.string():
      column = pc.fill_null(column.cast(pa.string()), '')
    columns[name] = column
  # Records -> lines: records follow each other, blank lines between them
  # are skipped, and a record spans one line more per newline in it.
  records = table.num_rows + len(invalid)
  valid = np.setdiff1d(np.arange(2, records + 2), list(invalid))
  spans = np.ones(records + 2, np.int64)
  for values in columns.values():
    spans[valid] += pc.count_substring_regex(values, _LINE_BREAK).to_numpy(
        zero_copy_only=False)
  for number, (text, _) in invalid.items():
    spans[number] += len(re.findall(_LINE_BREAK, text))
  spans[1] += sum(len(re.findall(_LINE_BREAK, name)) for name in header)
  starts = np.flatnonzero(~blank) + 1  # each non-blank line, from 1
  unmapped = ValueError('malformed CSV: its rows do not map onto its lines')
  if (spans == 1).all():
    if len(starts) < records + 1:
      raise unmapped
    first_lines = np.concatenate([[0], starts])  # record number -> line
  else:
    first_lines = np.zeros(records + 2, np.int64)
    line = 1 + spans[1]
    for number in range(2, records + 2):
      while line <= len(lines) and blank[line - 1]:
        line += 1
      if line > len(lines):
        raise unmapped
      first_lines[number] = line
      line += spans[number]
  if b'"' in data:
    _check_last_record_closed(lines, int(first_lines[records + 1]),
                              delimiter)
  return CsvTable(
      header, columns, first_lines[valid],
      sorted((int(first_lines[n]), text, error)
             for n, (text, error) in invalid.items()), lines, rules)


def _check_last_record_closed(lines: List[bytes], first_line: int,
                              delimiter: str) -> None:
  """A quote opened in the last record and never closed: pyarrow reads the
  rest of the file into that one value (the rows after it would vanish into
  it), so the file is refused. Only the last record can end that way."""
  tail = '\n'.join(line.decode('utf-8') for line in lines[first_line - 1:])
  try:
    for _ in csv.reader(io.StringIO(tail, newline=''), delimiter=delimiter,
                        strict=True):
      pass
  except csv.Error as e:
    if 'unexpected end of data' in str(e):
      raise ValueError(f'malformed CSV: the quote opened on line '
                       f'{first_line} is never closed') from None


# Beyond these, a value would become inf (float32) or wrap around (int64).
_LARGEST = {tf.float32: float(np.finfo(np.float32).max),
            tf.float64: float(np.finfo(np.float64).max),
            tf.int64: 2.0**63 - 1024, tf.int32: 2.0**31 - 1}


def _number(value: str, dtype: tf.dtypes.DType) -> float:
  """A CSV value as the model's number type; ValueError says why not."""
  number = float(value)  # ValueError for text
  if not math.isfinite(number):
    raise ValueError(f'{value!r} is not a finite number')
  if dtype.is_integer and not number.is_integer():
    raise ValueError(f'{value!r} is not an integer')
  if abs(number) > _LARGEST[dtype]:
    raise ValueError(f'{value!r} is out of the {dtype.name} range')
  return number


def _numbers(values: pa.Array, dtype: tf.dtypes.DType, name: str,
             errors: Dict[int, str], positions: np.ndarray) -> np.ndarray:
  """Non-empty text values -> float64, with Python's float() rules; an
  error (naming the column) for each bad one, keyed by row."""
  try:
    numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    numbers = pd.to_numeric(pd.Series(values.to_numpy(zero_copy_only=False),
                                      dtype=object),
                            errors='coerce').to_numpy(np.float64)
  numbers = numbers.copy()
  suspect = ~np.isfinite(numbers)
  suspect[~suspect] = np.abs(numbers[~suspect]) > _LARGEST[dtype]
  if dtype.is_integer:
    suspect[~suspect] = numbers[~suspect] != np.floor(numbers[~suspect])
  for at in np.flatnonzero(suspect):  # Python's rules, one by one
    try:
      numbers[at] = _number(values[int(at)].as_py(), dtype)
    except ValueError as e:
      errors.setdefault(int(positions[at]), f'column {name!r}: {e}')
  return numbers


def examples_for_model(table: CsvTable,
                       input_types: Dict[str, tf.dtypes.DType]
                       ) -> Tuple[List[bytes], Dict[int, str]]:
  """The rows of `table` -> serialized tf.Examples typed as the model reads
  them, column by column (tfx-bsl's C++ encoder). An empty value becomes
  an empty feature, which parses as missing, so the model imputes it. A
  column absent from the table is imputed in every row: callers refuse
  that unless the user allowed it (see missing_columns).
  Returns the examples of the good rows, in order, and {row index: error
  naming the column} for the others."""
  columns = {}
  errors: Dict[int, str] = {}
  for name, dtype in input_types.items():
    text = table.input_values(name)
    if text is None:
      continue  # left out of every row (allowed by the caller)
    present = pc.not_equal(text, '').to_numpy(zero_copy_only=False)
    values = text.filter(pa.array(present))
    if dtype == tf.string:
      values = values.cast(pa.binary())
    else:
      values = _numbers(values, dtype, name, errors, np.flatnonzero(present))
    columns[name] = (dtype, present, values)
  good = np.ones(len(table), bool)
  good[list(errors)] = False
  if not columns:
    return [tf.train.Example().SerializeToString()] * int(good.sum()), errors
  arrays = []
  for dtype, present, values in columns.values():
    kept = good[present]
    present = present[good]
    if dtype == tf.string:
      values = values.filter(pa.array(kept))
    else:
      values = pa.array(values[kept].astype(
          np.int64 if dtype.is_integer else np.float32))
    offsets = np.zeros(len(present) + 1, np.int32)
    np.cumsum(present, out=offsets[1:])
    # A null list (an empty value) is encoded as an empty feature.
    arrays.append(pa.ListArray.from_arrays(
        pa.array(offsets, mask=np.append(~present, False)), values))
  return example_coder.RecordBatchToExamples(
      pa.RecordBatch.from_arrays(arrays, list(columns))), errors



_KIND = {'bytes_list': tf.string, 'int64_list': tf.int64,
         'float_list': tf.float32}


def check_example(example: tf.train.Example,
                  input_types: Dict[str, tf.dtypes.DType]) -> None:
  """Raises a ValueError naming the feature if `example` does not match the
  model's input types (the model would fail the whole batch on it)."""
  for name, dtype in input_types.items():
    if name not in example.features.feature:
      continue
    feature = example.features.feature[name]
    kind = feature.WhichOneof('kind')
    values = getattr(feature, kind).value if kind else []
    if len(values) > 1:
      raise ValueError(f'feature {name!r}: {len(values)} values, expected 1')
    if values and not (
        _KIND[kind] == dtype or (dtype.is_floating and kind == 'float_list')):
      raise ValueError(f'feature {name!r}: {kind} where the model reads '
                       f'{dtype.name}')
    if kind == 'float_list' and values and not math.isfinite(values[0]):
      raise ValueError(f'feature {name!r}: {values[0]} is not finite')


def dead_letter(path: str, line: int, raw: str, error: str) -> Dict:
  """A row that was not predicted, and why; `line` is the CSV line or the
  TFRecord record number (from 1)."""
  return {'file': path, 'line': line, 'row': raw, 'error': error}


def counter_value(result, namespace: str, name: str) -> int:
  """A Beam counter's total from a finished job."""
  counters = result.metrics().query(beam.metrics.MetricsFilter()
                                    .with_namespace(namespace)
                                    .with_name(name))['counters']
  return int(sum(c.committed or c.attempted or 0 for c in counters))


class _LiveModel:
  """The loaded model version. With a base path, a background thread looks
  every `poll_seconds` and swaps in the newest newer version that is ready
  and loads, by the rule `serve` follows (tfx_e2e.serving.models.VersionWatch);
  inference never waits for a load."""

  def __init__(self, model_dir: str, base_path: Optional[str],
               poll_seconds: float):
    self.current = self._load(model_dir)
    self._watch_versions = VersionWatch(base_path) if base_path else None
    if base_path:
      threading.Thread(target=self._watch, args=(poll_seconds,), daemon=True,
                       name='model-version-watch').start()

  @staticmethod
  def _load(model_dir: str):
    """(serving_default's function, its input name, version)."""
    function, input_name, _ = _load_for_prediction(model_dir)
    return function, input_name, Path(model_dir).name

  def _watch(self, poll_seconds: float) -> None:
    while True:
      time.sleep(poll_seconds)
      try:
        self._look()
      except Exception:  # pylint: disable=broad-except
        _log.exception('looking for a new model version failed')

  def _look(self) -> None:
    found = self._watch_versions.load_newest(self._load,
                                             int(self.current[2]))
    if found:
      self.current = found[1]  # one reference assignment: the swap
      _log.info('now predicting with model version %d', found[0])


class VersionedModelHandler(inference_base.ModelHandler):
  """RunInference on the model's serving_default signature (serialized
  tf.Examples in, one prediction each out), answering (prediction, model
  version) for each element. An element is one serialized tf.Example (a
  float comes back) or a list of them (an array comes back): lists let the
  batch job move a thousand rows through Beam as one element.

  The signature is called directly: tfx-bsl's handler builds a
  PredictionLog proto per row, which costs more than the model itself.
  With `base_path`, the handler follows the newest complete version pushed
  there, looking every `poll_seconds`. (Beam's side-input model updates,
  `RunInference(model_metadata_pcoll=...)`, would do this on Dataflow, but
  the Python DirectRunner blocks the main input until a global-window side
  input is done, so the handler looks itself and works on every runner.)
  """

  def __init__(self, model_dir: str, base_path: Optional[str] = None,
               poll_seconds: float = 1.0,
               max_batch_size: Optional[int] = None):
    """
    Args:
      model_dir: the SavedModel (a version directory) to start with.
      base_path: where versions are pushed; the handler then answers with
        the newest complete one (None: `model_dir` only).
      poll_seconds: how often to look for a newer version under `base_path`.
      max_batch_size: Beam's largest batch of elements (None: Beam's
        default).
    """
    super().__init__()
    self._model_dir = model_dir
    self._base_path = base_path
    self._poll_seconds = poll_seconds
    self._max_batch_size = max_batch_size

  def load_model(self) -> _LiveModel:
    """The model, following `base_path`'s newest version if given."""
    return _LiveModel(self._model_dir, self._base_path, self._poll_seconds)

  def run_inference(self, batch: Sequence[Any], model: _LiveModel,
                    inference_args=None):
    """Predicts every element of `batch` in one call of the signature.

    Args:
      batch: elements, each a serialized tf.Example or a list of them.
      model: from `load_model`.
      inference_args: unused.

    Returns:
      For each element, (its prediction: a float, or an array for a list,
      the version of the model that made it).
    """
    function, input_name, version = model.current
    sizes = [len(e) if isinstance(e, list) else None for e in batch]
    flat = [x for e in batch for x in (e if isinstance(e, list) else [e])]
    outputs = function(**{input_name: tf.constant(flat)})
    values = next(iter(outputs.values())).numpy().reshape(len(flat))
    results, start = [], 0
    for size in sizes:
      if size is None:
        results.append((float(values[start]), version))
        start += 1
      else:
        results.append((values[start:start + size], version))
        start += size
    return results

  def get_num_bytes(self, batch) -> int:
    return sum(sum(map(len, e)) if isinstance(e, list) else len(e)
               for e in batch)

  def batch_elements_kwargs(self):
    return {'max_batch_size': self._max_batch_size} if (
        self._max_batch_size) else {}
