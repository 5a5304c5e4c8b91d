"""The data gate in front of CsvExampleGen, and the CSV rules it applies.

What the pipeline takes from a user's CSV is decided here, once, before TFX
starts; nothing downstream guesses again. The rules that the other readers
of CSV files share (delimiter, header names, missing values, numbers) are
enforced by one module, formats/csv_rules.py; this one applies them to the
training data, and adds what only the gate decides (files, labels, the
normalized copy):

- **Files**: a CSV file, or a directory of them sharing one header; plain,
  gzip, bzip2 or xz (detected from the bytes, not the name). The path is
  taken literally: `[`, `*` and `?` in it are characters, not patterns.
- **Delimiter**: `data.delimiter`, or detected from the header line among
  `,` `;` tab and `|`.
- **Header names** become valid model input names (`feature_name`): a
  name of ASCII letters, digits and `_` that starts with a letter is kept;
  in others every other character becomes `_` (accents are dropped first),
  leading and trailing `_` go, a leading digit gets `c_`, and an empty name
  is `column_<position>`. Two columns that would get one name (compared
  regardless of case, as TensorFlow's signatures compare them: `a b` and
  `A_B`), or that have the very same header name, are refused: a model
  name stands for one header name, whatever the order of the columns in a
  file to predict. Settings may name columns either way (`Trip Miles` or
  `Trip_Miles`).
- **Values**: surrounding spaces are trimmed, and a value in
  `data.na_values` (pandas' default markers, plus `inf`, `-`, `?`) is
  missing. A column is numeric when every present value is a number as
  CsvExampleGen parses them (`NUMBER`); a column that is mostly numbers but
  not all is read as text, and reported with examples of what is not a
  number.
- **Label**: numeric. A row whose label is missing, not finite or beyond
  float32's range (tf.Example floats) is dropped (counted, with examples);
  a label that is text refuses the file, with the count and examples, and
  so does a label that is the same in every row.

Problems with the file itself are refused (`InputError`) naming the file,
line and column. When the file differs from what CsvExampleGen reads
(renamed header, markers, spaces, another delimiter, compression, dropped
rows, a path with pattern characters), `prepare_input` writes the normalized
rows under the output directory, keyed by a hash of the input and the rules,
so an unchanged second run reads the very same file and hits the cache.
"""

from __future__ import annotations

import array
import bz2
import collections
import concurrent.futures
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import math
import re
from pathlib import Path
from typing import (IO, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from tfx_e2e.components import features
from tfx_e2e.formats import csv_rules, files
# The rules themselves, under the names the gate's callers use.
from tfx_e2e.formats.csv_rules import (DELIMITER_SAMPLE, DELIMITERS, NUMBER,
                                       CsvRules, InputError, casts,
                                       check_header, configured_delimiter,
                                       delimiter_of, feature_name,
                                       feature_names, resolve_column)
from tfx_e2e.pipeline.config import FILE_PATTERN_CHARS, PipelineConfig


# What a person would read as a number, written in a way CsvExampleGen does
# not: a sign, a currency, thousands separators, a decimal comma, a percent.
_LOOKS_NUMERIC = re.compile(
    r'[+-]?[$€£]?(?:[0-9]{1,3}(?:[,.\' ][0-9]{3})+|[0-9]+)?(?:[.,][0-9]+)?'
    r'(?:[eE][+-]?[0-9]+)?%?')
# Files of a directory input.
_CSV_SUFFIXES = ('.csv', '.csv.gz', '.csv.bz2', '.csv.xz')
_MAX_EXAMPLES = 5
# In the key of the normalized copy: a change to these rules writes anew.
_CODE_DIGEST = hashlib.sha256(b''.join(
    Path(module).read_bytes()
    for module in (__file__, csv_rules.__file__))).hexdigest()
# Values on which a column that is not all numbers is judged mostly text.
_TYPE_SAMPLE = 1000


@dataclasses.dataclass
class TextColumn:
  """A column read as text although most of its values are numbers."""
  not_numbers: int         # present values that are not numbers
  present: int             # present (non-missing) values
  examples: List[str]      # a few distinct ones, as in the file


@dataclasses.dataclass
class InputReport:
  files: List[str]
  header: List[str]        # the columns as the file names them
  columns: List[str]       # the names the pipeline uses, in file order
  rows: int                # data rows read (header excluded)
  dropped_rows: int        # rows without a usable label
  dropped_examples: List[str]  # the first few, as 'file:line (reason)'
  path: str                # what CsvExampleGen reads: the input or its copy
  # Header name -> model name, for the names that changed.
  renamed: Dict[str, str] = dataclasses.field(default_factory=dict)
  delimiter: str = ','
  compression: Optional[str] = None
  # Per column (model name): cells read as missing because of a marker.
  missing_markers: Dict[str, int] = dataclasses.field(default_factory=dict)
  # Per column: values whose surrounding spaces were trimmed.
  trimmed: Dict[str, int] = dataclasses.field(default_factory=dict)
  text_columns: Dict[str, TextColumn] = dataclasses.field(
      default_factory=dict)
  # Why the pipeline reads a normalized copy ([] when it reads the input).
  copy_reasons: List[str] = dataclasses.field(default_factory=list)
  key: str = ''            # hash of the input and the rules (the copy's)
  # Per file, the lines of the dropped rows in order, for the copy.
  dropped_lines: Dict[str, Sequence[int]] = dataclasses.field(
      default_factory=dict)
  # Columns without a value (no feature: CsvExampleGen leaves them out).
  empty_columns: List[str] = dataclasses.field(default_factory=list)
  label_range: Tuple[float, float] = (0.0, 0.0)


def _compression(path: Path) -> Optional[str]:
  with open(path, 'rb') as raw:
    magic = raw.read(6)
  if magic.startswith(b'\x1f\x8b'):
    return 'gzip'
  if magic.startswith(b'BZh'):
    return 'bzip2'
  if magic.startswith(b'\xfd7zXZ\x00'):
    return 'xz'
  if magic.startswith(b'PK\x03\x04'):
    raise InputError(f'{path}: a zip archive, not a CSV file: unzip it and '
                     'pass the CSV file (or its directory)')
  if magic.startswith(b'\x28\xb5\x2f\xfd'):
    raise InputError(f'{path}: zstd-compressed; decompress it first '
                     '(gzip, bzip2 and xz are read as they are)')
  return None


_OPENERS = {None: open, 'gzip': gzip.open, 'bzip2': bz2.open, 'xz': lzma.open}


def _open_bytes(path: Path, compression: Optional[str]) -> IO[bytes]:
  return _OPENERS[compression](path, 'rb')


def _arrow_input(path: Path, compression: Optional[str]) -> pa.NativeFile:
  """The file's bytes as an Arrow stream, decompressed in Arrow (xz, which
  Arrow lacks, in memory). Not a Python file object: Arrow's reader threads
  would call back into Python for every read, and a reader left unfinished
  (the record pass stopped it) can then hold one of them for good."""
  if compression == 'xz':
    with lzma.open(path, 'rb') as f:
      return pa.BufferReader(f.read())
  return pa.input_stream(str(path), compression={
      None: None, 'gzip': 'gzip', 'bzip2': 'bz2'}[compression])


def _input_files(path: Path) -> List[Path]:
  if not path.exists():
    raise InputError(f'{path}: no such file or directory')
  if not path.is_dir() and not path.is_file():
    raise InputError(f'{path}: not a regular file (a pipe?): the data is '
                     'read more than once; save it to a file first')
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.is_file() and
                   p.name.lower().endswith(_CSV_SUFFIXES))
    if not files:
      raise InputError(f'{path}: directory holds no CSV files '
                       f'({", ".join("*" + s for s in _CSV_SUFFIXES)})')
    return files
  return [path]


def _text(path: Path, compression: Optional[str]) -> IO[str]:
  try:
    return io.TextIOWrapper(_open_bytes(path, compression), newline='',
                            encoding='utf-8-sig')
  except OSError as e:
    raise InputError(f'{path}: cannot read: {e.strerror}') from e


def _header_delimiter(path: Path, compression: Optional[str],
                      configured: str) -> str:
  if configured:
    return configured_delimiter(configured)
  with _text(path, compression) as text:
    try:
      lines = [line for _, line in zip(range(DELIMITER_SAMPLE), text)]
    except UnicodeDecodeError:
      raise _not_utf8(path, compression) from None
  return delimiter_of(lines[0] if lines else '', '', lines[1:])


def _records(path: Path, compression: Optional[str], delimiter: str
             ) -> Iterator[Tuple[int, List[str]]]:
  """(line number, fields) for each record, streamed (a file of any size
  takes little memory)."""
  text = _text(path, compression)
  # Arrow takes a value of any length; so must this reader (128 kB).
  csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
  with text:
    reader = csv.reader(text, delimiter=delimiter)
    previous_line = 0
    try:
      for fields in reader:
        if reader.line_num != previous_line + 1:
          # CsvExampleGen reads one record per line.
          raise InputError(
              f'{path}:{previous_line + 1}: a quoted field spans several '
              'lines; CsvExampleGen needs one record per line')
        previous_line = reader.line_num
        yield reader.line_num, fields
    except csv.Error as e:
      raise InputError(f'{path}:{reader.line_num}: malformed CSV: {e}'
                       ) from None
    except UnicodeDecodeError:
      raise _not_utf8(path, compression) from None
    except (OSError, EOFError, lzma.LZMAError) as e:
      raise InputError(f'{path}: cannot read ({compression or "file"}): '
                       f'{e}') from None


def _not_utf8(path: Path, compression: Optional[str]) -> InputError:
  """The error for the first line of `path` that is not UTF-8. (The text
  reader decodes ahead of the line it yields, so its position is not it.)"""
  with _open_bytes(path, compression) as raw:
    for number, line in enumerate(raw, start=1):
      try:
        line.decode('utf-8')
      except UnicodeDecodeError as e:
        return InputError(f'{path}:{number}: not valid UTF-8 text '
                          f'(byte {line[e.start]:#04x}); save the file as '
                          'UTF-8')
  return InputError(f'{path}: not valid UTF-8 text')


def _resolved_settings(config: PipelineConfig, path: Path,
                       header: Sequence[str], names: Sequence[str]
                       ) -> Dict[str, object]:
  """data.label and the column lists of `config`, as model names."""
  label = resolve_column(config.data.label, header, names)
  if label is None:
    others = [d for d in DELIMITERS if any(d in title for title in header)]
    hint = (f'; if the fields are separated by {others[0]!r}, set '
            f'data.delimiter' if others else '')
    raise InputError(f'{path}: no label column {config.data.label!r} '
                     f'(columns: {", ".join(header)}){hint}')
  resolved: Dict[str, object] = {'label': label}
  for setting in ('exclude_features', 'categorical_features',
                  'slice_features'):
    columns = [(c, resolve_column(c, header, names))
               for c in getattr(config.data, setting)]
    unknown = [c for c, name in columns if name is None]
    if unknown:
      raise InputError(f'{path}: data.{setting} names columns the data does '
                       f'not have: {", ".join(unknown)}')
    resolved[setting] = [name for _, name in columns]
  if label in resolved['exclude_features']:
    raise InputError(f'the label {config.data.label!r} is also excluded')
  # The transformed features sit beside the label in one mapping (see
  # components/preprocessing.py): the label may not take one of their names.
  if label in (features.CATEGORIES, features.NUMBERS):
    raise InputError(
        f'{path}: the label column {config.data.label!r} is named as a '
        f'transformed feature ({label}); rename the column in the file')
  if not [n for n in names
          if n != label and n not in resolved['exclude_features']]:
    raise InputError(f'{path}: no feature columns: the data has only the '
                     f'label{" and excluded columns" if len(names) > 1 else ""}'
                     f' (columns: {", ".join(header)})')
  return resolved


def _check_schema(schema_path: str, header: Sequence[str],
                  names: Sequence[str]) -> None:
  """Refuses a curated schema whose features the data does not have under
  their model names (ExampleValidator would stop the run after three
  components, its anomalies calling each column dropped and new)."""
  # Imported here: a protobuf module, which a run without a schema skips.
  from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=import-outside-toplevel
  try:
    schema = text_format.Parse(Path(schema_path).read_text(),
                               schema_pb2.Schema())
  except (OSError, text_format.ParseError) as e:
    raise InputError(f'{schema_path}: not a readable schema.pbtxt: {e}'
                     ) from None
  unknown = [f.name for f in schema.feature if f.name not in names]
  if unknown:
    hints = [f'{n!r} is {names[list(header).index(n)]!r}'
             for n in unknown if n in header]
    raise InputError(
        f'{schema_path}: features the data does not have: '
        f'{", ".join(unknown)}' + (
            f' (the schema names columns as the file does; the model names '
            f'them: {", ".join(hints)})' if hints else ''))


def resolve_config(config: PipelineConfig,
                   report: InputReport) -> PipelineConfig:
  """`config` with its column settings as model names and its data path
  the file CsvExampleGen reads. Columns without a single value are excluded
  from the model: the fast ExampleGen leaves them out of the examples, TFX's
  own keeps them as features without a type, which would become inputs."""
  resolved = _resolved_settings(config, Path(report.files[0]), report.header,
                                report.columns)
  excluded = resolved['exclude_features']
  resolved['exclude_features'] = excluded + [
      name for name in report.empty_columns if name not in excluded]
  return dataclasses.replace(config, data=dataclasses.replace(
      config.data, path=report.path, **resolved))


def _label_problem(value: str, na_values: frozenset) -> Optional[str]:
  """Why a label value is unusable, or None if it is a finite number."""
  value = value.strip()
  if value in na_values:
    return f'missing label {value!r}' if value else 'missing label'
  if not NUMBER.fullmatch(value):
    return _NOT_NUMERIC
  number = float(value)
  if not math.isfinite(number):
    return f'non-finite label {value!r}'
  # tf.Example floats are float32: beyond its range a label is infinite.
  return None if abs(number) <= _FLOAT32_MAX else (
      f'label {value!r} beyond the float32 range')


_NOT_NUMERIC = 'not a number'
_UNSEEN = object()
_LABEL_CACHE = 100_000
_FLOAT32_MAX = 3.4028234663852886e38
# Beyond this, float32 does not hold every integer.
_FLOAT32_EXACT = 2.0**24


class _ColumnProfile:
  """Per column: markers, padded values, and the values that are not
  numbers, counted with Arrow (a Python test per value would cost more than
  the rest of the gate)."""

  def __init__(self, names: Sequence[str], na_values: frozenset):
    self._names = list(names)
    self._na = pa.array(sorted(na_values), pa.string())
    # Markers that are finite numbers (e.g. -999): every value of a numeric
    # column is then looked up, not only its NaNs and infinities.
    self._number_markers = any(
        NUMBER.fullmatch(m) and math.isfinite(float(m)) for m in na_values)

    self.markers = collections.Counter()
    self.trimmed = collections.Counter()
    self.present = collections.Counter()
    self.not_numbers = collections.Counter()
    self.looks_numeric = collections.Counter()
    self.examples: Dict[str, List[str]] = collections.defaultdict(list)
    self._text = set()  # columns judged text: most values not numbers
    self.stopped = False

  def add_file(self, path: Path, compression: Optional[str],
               delimiter: str) -> None:
    options = dict(
        read_options=pa_csv.ReadOptions(column_names=self._names,
                                        skip_rows=1, block_size=16 << 20),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter),
        convert_options=csv_rules.as_text(self._names))
    try:
      with _arrow_input(path, compression) as source:
        for batch in pa_csv.open_csv(source, **options):
          if self.stopped:
            return
          for name, values in zip(self._names, batch.columns):
            self._add(name, values)
    except (pa.ArrowInvalid, OSError, EOFError, lzma.LZMAError) as e:
      raise InputError(f'{path}: cannot read as CSV: {e}') from None

  def _add(self, name: str, values: pa.Array) -> None:
    stripped = pc.utf8_trim_whitespace(values)
    self.trimmed[name] += len(values) - (
        pc.sum(pc.equal(stripped, values)).as_py() or 0)
    present = stripped.filter(pc.not_equal(stripped, ''))
    try:
      numbers = pc.cast(present, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
      numbers = None
    if numbers is not None:
      # All numbers (the common case, decided in one cast): the only
      # markers among them are spellings of NaN and infinity, unless a
      # marker is a finite number.
      marked = pc.is_in(present if self._number_markers else present.filter(
          pc.invert(pc.is_finite(numbers))), value_set=self._na)
      markers = pc.sum(marked).as_py() or 0
      self.markers[name] += markers
      self.present[name] += len(present) - markers
      return
    missing = pc.is_in(present, value_set=self._na)
    self.markers[name] += pc.sum(missing).as_py() or 0
    present = present.filter(pc.invert(missing))
    self.present[name] += len(present)
    if name in self._text:
      return
    if casts(present, pa.float64()):
      return  # numbers once the markers are out
    if name not in self.not_numbers and self._mostly_text(present):
      # Judged on the first values that do not all parse: a text column
      # is not searched for numbers again (most of this pass's time).
      self._text.add(name)
      return
    bad = present.filter(pc.invert(pc.match_substring_regex(
        present, f'^(?:{NUMBER.pattern})$', ignore_case=True)))
    self.not_numbers[name] += len(bad)
    self.looks_numeric[name] += len(self._looks_numeric(bad))
    examples = self.examples[name]
    for value in pc.unique(bad[:1000]).to_pylist():
      if len(examples) >= _MAX_EXAMPLES:
        break
      if value not in examples:
        examples.append(value)

  @staticmethod
  def _looks_numeric(values: pa.Array) -> pa.Array:
    return values.filter(pc.and_(
        pc.match_substring_regex(values,
                                 f'^(?:{_LOOKS_NUMERIC.pattern})$'),
        pc.match_substring_regex(values, '[0-9]')))

  def _mostly_text(self, present: pa.Array) -> bool:
    sample = present[:_TYPE_SAMPLE]
    numbers = pc.sum(pc.match_substring_regex(
        sample, f'^(?:{NUMBER.pattern})$', ignore_case=True)).as_py() or 0
    return (numbers + len(self._looks_numeric(sample))) * 2 < len(sample)

  def text_columns(self, skip: Sequence[str]) -> Dict[str, TextColumn]:
    """Columns read as text in which most present values are, or look
    like, numbers."""
    found = {}
    for name in self._names:
      bad, present = self.not_numbers[name], self.present[name]
      if name in skip or name in self._text or not bad:
        continue
      numbers = present - bad + self.looks_numeric[name]
      if numbers * 2 >= present:
        found[name] = TextColumn(bad, present, self.examples[name])
    return found


def check_input(config: PipelineConfig) -> InputReport:
  """Reads and validates the CSV input of `config`; writes nothing.

  Returns what the pipeline will read (`prepare_input` writes the copy the
  report asks for). Raises InputError for data that cannot be used.
  """
  data_path = Path(config.data.path)
  files = _input_files(data_path)
  na_values = CsvRules.of(config).missing_values
  digest = hashlib.sha256('\0'.join(
      [_CODE_DIGEST, config.data.label, config.data.delimiter,
       *sorted(na_values)]).encode())
  header: Optional[List[str]] = None
  names: List[str] = []
  delimiter = ','
  # Per file, the lines of rows without a usable label, in order.
  dropped_lines: Dict[str, array.array] = {}
  low, high = math.inf, -math.inf
  rows = 0
  dropped_examples: List[str] = []
  bad_labels = 0
  bad_label_examples: List[Tuple[Path, int, str]] = []
  label_problems: Dict[str, Optional[str]] = {}
  compressions = set()
  profile: Optional[_ColumnProfile] = None
  # The column profile (Arrow, mostly without the GIL) runs beside this
  # pass over the records (Python), so on two cores much of it overlaps
  # (BENCHMARKS.md, data gate).
  pool = concurrent.futures.ThreadPoolExecutor(1)
  profiled = []
  try:
    for path in files:
      try:
        compression = _compression(path)
        with open(path, 'rb') as raw:
          for block in iter(lambda: raw.read(1 << 20), b''):
            digest.update(block)
      except OSError as e:
        raise InputError(f'{path}: cannot read: {e.strerror}') from e
      compressions.add(compression)
      if header is None:
        delimiter = _header_delimiter(path, compression,
                                      config.data.delimiter)
      records = _records(path, compression, delimiter)
      first = next(records, None)
      if first is None or not any(field.strip() for field in first[1]):
        raise InputError(f'{path}: empty file (no header row)')
      file_header = first[1]
      if header is None:
        header = file_header
        check_header(path, header)
        names = feature_names(header)
        resolved = _resolved_settings(config, path, header, names)
        if config.data.schema:
          _check_schema(config.data.schema, header, names)
        label_index = names.index(resolved['label'])
        profile = _ColumnProfile(names, na_values)
      elif file_header != header:
        raise InputError(f'{path}: header differs from {files[0]}: '
                         f'{delimiter.join(file_header)}')
      profiled.append(pool.submit(profile.add_file, path, compression,
                                  delimiter))
      file_rows = 0
      file_dropped = dropped_lines[str(path)] = array.array('q')
      for line, fields in records:
        if not fields:
          continue  # blank line
        file_rows += 1
        if len(fields) != len(header):
          hint = (f'; the header has no {delimiter!r}: set data.delimiter'
                  if len(header) == 1 else '')
          raise InputError(f'{path}:{line}: {len(fields)} fields, but the '
                           f'header has {len(header)}{hint}')
        value = fields[label_index]
        problem = label_problems.get(value, _UNSEEN)
        if problem is _UNSEEN:  # labels repeat: each value is judged once
          if len(label_problems) > _LABEL_CACHE:
            label_problems.clear()
          problem = label_problems[value] = _label_problem(value, na_values)
          if problem is None:  # the range of the labels trained on
            number = float(value)
            low, high = min(low, number), max(high, number)
        if problem == _NOT_NUMERIC:
          bad_labels += 1
          if len(bad_label_examples) < _MAX_EXAMPLES:
            bad_label_examples.append((path, line, value))
        elif problem:
          file_dropped.append(line)
          if len(dropped_examples) < _MAX_EXAMPLES:
            dropped_examples.append(f'{path.name}:{line} ({problem})')
      if file_rows == 0:
        raise InputError(f'{path}: no data rows after the header')
      rows += file_rows
    for future in profiled:
      future.result()
  finally:
    if profile is not None:
      profile.stopped = True  # after an error in this pass: stop it early
    pool.shutdown(cancel_futures=True)

  label = names[label_index]
  dropped = sum(map(len, dropped_lines.values()))
  if bad_labels:
    path, line, value = bad_label_examples[0]
    more = ''
    if bad_labels > 1:
      more = f'; {bad_labels:,} rows like this, e.g. ' + ', '.join(
          f'{p.name}:{n} {v!r}' for p, n, v in bad_label_examples)
    raise InputError(
        f'{path}:{line}: label {config.data.label!r} is not numeric: '
        f'{value!r} (column {label_index + 1}){more}; fix those values, '
        'mark them missing (data.na_values), or choose another --label')
  if dropped == rows:
    raise InputError(f'{data_path}: no row has a usable label '
                     f'{config.data.label!r}')
  if low == high and rows - dropped > 1:
    raise InputError(f'{data_path}: label {config.data.label!r} is {low:g} '
                     'in every row: there is nothing to learn')
  empty = [name for name in names if not profile.present[name]]
  for setting in ('slice_features', 'categorical_features'):
    unusable = [name for name in resolved[setting] if name in empty]
    if unusable:
      raise InputError(
          f'{data_path}: data.{setting} names columns without a single '
          f'value (every row empty or a missing-value marker): '
          f'{", ".join(unusable)}')
  renamed = {title: name for title, name in zip(header, names)
             if title != name}
  markers = {name: n for name, n in profile.markers.items() if n}
  trimmed = {name: n for name, n in profile.trimmed.items() if n}
  compression = next((c for c in compressions if c), None)
  reasons = []
  if dropped:
    reasons.append(f'{dropped:,} rows without a usable label '
                   'dropped')
  if renamed:
    reasons.append('header names made valid model inputs')
  if markers:
    reasons.append('missing-value markers read as missing')
  if trimmed:
    reasons.append('spaces around values trimmed')
  if delimiter != ',':
    reasons.append(f'delimiter {delimiter!r}')
  if compression:
    reasons.append(f'{compression}-compressed')
  if any(FILE_PATTERN_CHARS.search(str(p))
         for p in (data_path.absolute(), data_path.resolve(), *files)):
    reasons.append('the path has file-pattern characters')
  elif data_path.is_dir() and not all(f.name.endswith('.csv') for f in files):
    reasons.append('file names that CsvExampleGen\'s *.csv would not match')
  key = digest.hexdigest()[:16]
  return InputReport(
      files=[str(f) for f in files], header=header, columns=names,
      rows=rows,
      dropped_rows=dropped, dropped_examples=dropped_examples,
      path=(str(_copy_path(config, key)) if reasons else str(data_path)),
      renamed=renamed, delimiter=delimiter, compression=compression,
      missing_markers=markers, trimmed=trimmed,
      text_columns=profile.text_columns(
          [label, *resolved['exclude_features']]),
      copy_reasons=reasons, key=key, dropped_lines=dropped_lines,
      empty_columns=[n for n in empty if n != label],
      label_range=(low, high) if low <= high else (0.0, 0.0))


def _copy_path(config: PipelineConfig, key: str) -> Path:
  return config.output_path / 'input' / key / 'data.csv'


def prepare_input(config: PipelineConfig, report: InputReport) -> str:
  """Writes the normalized copy `report` asks for, if any (a second pass
  over the input); returns the path CsvExampleGen reads."""
  if not report.copy_reasons:
    return report.path
  target = Path(report.path)
  if target.exists():  # same input as a previous run: keep the file (cache)
    return str(target)
  na_values = CsvRules.of(config).missing_values
  target.parent.mkdir(parents=True, exist_ok=True)
  # Never a half-written input in place: a later run would take it whole.
  with files.atomic_output(target, 'w', newline='') as out:
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(report.columns)
    for path in map(Path, report.files):
      records = _records(path, _compression(path), report.delimiter)
      next(records, None)  # the header
      dropped = iter(report.dropped_lines.get(str(path), ()))
      next_dropped = next(dropped, None)
      for line, fields in records:
        if line == next_dropped:
          next_dropped = next(dropped, None)
          continue
        if fields:
          writer.writerow(['' if value in na_values else value for value in
                           (field.strip() for field in fields)])
  return str(target)


def _counts(counts: Dict[str, int]) -> str:
  return ', '.join(f'{name} {count:,}' for name, count in counts.items())


def _hint(examples: List[str]) -> str:
  """What the non-numbers of a mostly numeric column look like."""
  if any(re.fullmatch(r'[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?', e)
         for e in examples):
    return 'thousands separators? '
  if any(re.fullmatch(r'[+-]?[0-9]+,[0-9]+', e) for e in examples):
    return 'decimal commas? '
  return ''


def input_notes(report: InputReport) -> List[str]:
  """How the input was read, where it differs from the file as it is: the
  guesses a user should know of."""
  lines = []
  if report.copy_reasons:
    lines.append(f'  read as: {"; ".join(report.copy_reasons)} (a normalized '
                 f'copy: {report.path})')
  if report.renamed:
    lines.append('  columns renamed to valid model input names: ' + ', '.join(
        f'{original!r} -> {name}' for original, name in report.renamed.items()))
  if report.missing_markers:
    lines.append('  missing-value markers (data.na_values) per column: '
                 + _counts(report.missing_markers))
  if report.empty_columns:
    lines.append('  columns without a single value, so not features: ' +
                 ', '.join(report.empty_columns))
  if max(map(abs, report.label_range)) > _FLOAT32_EXACT:
    lines.append(
        f'  warning: labels up to {max(map(abs, report.label_range)):,.0f} '
        'lose digits as float32 (tf.Example floats: 7 significant digits); '
        'to keep them, scale the label in the file (e.g. thousands)')
  for name, column in report.text_columns.items():
    lines.append(
        f'  warning: {name} is read as text (a vocabulary), though most of '
        f'its values are numbers: {column.not_numbers:,} of '
        f'{column.present:,} are not, e.g. '
        f'{", ".join(repr(e) for e in column.examples)} '
        f'({_hint(column.examples)}fix them, add them to data.na_values, or '
        f'exclude the column)')
  return lines


# The in-pipeline screening. CsvExampleGen's custom_config (JSON) carries
# the digest of its code, the data settings, and, when this gate already
# ran before the pipeline started (the local runner), the input's digest.
SCREENED_INPUT = 'screened_input'
DATA_SETTINGS = 'data'
CODE = 'code'


def example_gen_settings(config: PipelineConfig, code_digest: str,
                         input_digest: str = '') -> str:
  """CsvExampleGen's custom_config: what its executor screens by (see
  `screen`), or, with `input_digest`, that this gate checked the input
  already (then the data settings stay out of its cache key)."""
  if input_digest:
    return json.dumps({CODE: code_digest, SCREENED_INPUT: input_digest},
                      sort_keys=True)
  data = dataclasses.asdict(config.data)
  data.update(path='', schema=None)  # where the executor reads it
  return json.dumps({CODE: code_digest, DATA_SETTINGS: data},
                    sort_keys=True)


def _local_input(input_base: str, pattern: str, work_dir: Path) -> Path:
  """The input as a local path: the file or directory itself, or a copy of
  remote files (gs://) under `work_dir`."""
  if '://' not in input_base:
    return Path(input_base) if pattern == '*.csv' else Path(input_base,
                                                             pattern)
  # Imported here: the gate itself needs no TensorFlow.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  names = (tf.io.gfile.listdir(input_base) if pattern == '*.csv'
           else [pattern])
  local = work_dir / 'remote-input'
  local.mkdir(parents=True, exist_ok=True)
  for name in names:
    name = name.rstrip('/')
    if pattern != '*.csv' or name.endswith(_CSV_SUFFIXES):
      tf.io.gfile.copy(f'{input_base.rstrip("/")}/{name}', str(local / name),
                       overwrite=True)
  return local if pattern == '*.csv' else local / pattern


def needs_screening(custom_config: str) -> bool:
  """Whether CsvExampleGen's custom_config asks its executor to screen the
  input: it carries data settings, and no earlier check screened it."""
  try:
    settings = json.loads(custom_config or '{}')
  except ValueError:
    return False
  return (isinstance(settings, dict) and
          isinstance(settings.get(DATA_SETTINGS), dict) and
          not settings.get(SCREENED_INPUT))


def screen(custom_config: str, input_base: str, pattern: str,
           work_dir: str) -> Tuple[str, str]:
  """The data gate inside CsvExampleGen's executor, for orchestrators that
  run the pipeline without `tfx-e2e run` in front of it (Kubeflow).

  Checks the input as the local runner does before TFX starts, with the
  same messages (InputError). The pipeline was built without seeing the
  data, so the columns it names must be the data's as they are: a
  configuration that the gate would have to resolve (a header name that
  differs from its model name, a column without values) is refused with
  the setting to write. Returns the input base and pattern to read: the
  input, or its normalized copy under `work_dir`.

  A `custom_config` without data settings (TFX's own, or an input that
  the local runner checked already) is not screened again.
  """
  if not needs_screening(custom_config):
    return input_base, pattern
  settings = json.loads(custom_config)
  data = _local_input(input_base, pattern, Path(work_dir))
  config = PipelineConfig(output_dir=work_dir)
  config = dataclasses.replace(config, data=dataclasses.replace(
      config.data, **dict(settings[DATA_SETTINGS], path=str(data))))
  report = check_input(config)
  resolved = resolve_config(config, report).data
  differences = [
      f'data.{name}: {getattr(config.data, name)!r} -> '
      f'{getattr(resolved, name)!r}'
      for name in ('label', 'exclude_features', 'categorical_features',
                   'slice_features')
      if getattr(config.data, name) != getattr(resolved, name)]
  if differences:
    raise InputError(
        f'{data}: the compiled pipeline names columns differently from '
        f'how the data is read: {"; ".join(differences)}. Compile it with '
        'the settings on the right (`tfx-e2e run --data FILE` on a sample '
        'prints how a file is read).')
  for line in input_notes(report):
    print(line, flush=True)
  path = Path(prepare_input(config, report))
  if path == data:
    return input_base, pattern
  return str(path.parent), path.name
