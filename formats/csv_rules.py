"""The CSV rules: how every reader of a CSV file in this project reads one.

One module for the rules that the data gate (`pipeline/input_check.py`),
CsvExampleGen's fast executor (`components/executors/csv_example_gen.py`)
and the prediction jobs (`inference/prediction.py`) share, so that a file
to predict is read as the training file was:

- **Delimiter** (`delimiter_of`): the configured one (`tab`, a typed `\\t`
  and the names `comma`, `semicolon`, `pipe` allowed), or detected from the
  header line among `,` `;` tab and `|`, checked on the next lines.
- **Header names** (`feature_name`, `feature_names`, `check_header`,
  `resolve_column`): a header name becomes a valid model input name; two
  columns that make one name are refused.
- **Missing values** (`CsvRules`): surrounding spaces are trimmed, and a
  value in `na_values` (or empty) is missing.
- **Numbers** (`NUMBER`, `casts`, `column_type`): a number is what Arrow's
  cast reads as one (no `+`, no spaces, no thousands separators); a column
  is int if every present value is an int64, else float if every one is a
  number, else text: TFX's CsvExampleGen rule.
- **Header line** (`header_line`, `parse_header`): the first line, ended by
  LF, CRLF or CR.

TF-free (the standard library and pyarrow): the data gate and the tests of
these rules do not load TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import unicodedata
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

# Markers of a missing value: pandas' default `na_values`, and `inf`,
# `-`, `?` (UCI's marker).
DEFAULT_NA_VALUES = (
    '', '#N/A', '#N/A N/A', '#NA', '-1.#IND', '-1.#QNAN', '-NaN', '-nan',
    '1.#IND', '1.#QNAN', '<NA>', 'N/A', 'NA', 'NULL', 'NaN', 'None', 'n/a',
    'nan', 'null', 'inf', '-inf', 'Inf', '-Inf', 'Infinity', '-Infinity',
    '-', '?')


# The byte order mark some editors (Excel) put before the header: not part
# of the first column's name. (Text readers drop it with 'utf-8-sig'.)
BOM = b'\xef\xbb\xbf'


def without_bom(data: bytes) -> bytes:
  """`data` without a leading byte order mark."""
  return data.removeprefix(BOM)


def as_text(names: Sequence[str]) -> pa_csv.ConvertOptions:
  """Arrow's CSV conversion that keeps every column as the file's text, ''
  where a value is empty: the rules here decide types and missing values,
  not Arrow's inference."""
  return pa_csv.ConvertOptions(
      column_types={name: pa.string() for name in names},
      strings_can_be_null=False, quoted_strings_can_be_null=False)


class InputError(ValueError):
  """The input data cannot be used; the message names the file and problem."""


# ---- Delimiter --------------------------------------------------------------

DELIMITERS = (',', ';', '\t', '|')
# Lines on which the delimiter is detected (the header and the next ones).
DELIMITER_SAMPLE = 20
_DELIMITER_NAMES = {'tab': '\t', '\\t': '\t', 'comma': ',',
                    'semicolon': ';', 'pipe': '|'}


def configured_delimiter(value: str) -> str:
  """data.delimiter as a character (`tab` and a typed `\\t` are a tab)."""
  return _DELIMITER_NAMES.get(value.strip().lower(), value)


def delimiter_of(header_line: str, configured: str = '',
                 next_lines: Sequence[str] = ()) -> str:
  """`configured`, or the delimiter of a header line: of those it holds,
  the one that splits the next lines into as many fields as the header
  (the most used one if none does; `,` if it holds none)."""
  if configured:
    return configured_delimiter(configured)
  counts = {d: header_line.count(d) for d in DELIMITERS}
  found = sorted((d for d in DELIMITERS if counts[d]),
                 key=lambda d: (-counts[d], d != ','))
  for delimiter in found:
    try:
      rows = list(csv.reader([header_line, *next_lines], delimiter=delimiter))
    except csv.Error:
      continue  # the record pass names the line
    if len(rows[0]) > 1 and all(len(r) == len(rows[0]) for r in rows if r):
      return delimiter
  return found[0] if found else ','


# ---- Header line ------------------------------------------------------------

def header_line(f: IO[bytes]) -> Tuple[bytes, int]:
  """The first line of a binary file read from its start (ended by LF,
  CRLF or CR), and where the next line begins."""
  head = b''
  while True:
    block = f.read(1 << 16)
    head += block
    breaks = [i for i in (head.find(b'\r'), head.find(b'\n')) if i >= 0]
    if breaks or not block:
      break
  if not breaks:
    return head, len(head)
  at = min(breaks)
  return head[:at], at + (2 if head[at:at + 2] == b'\r\n' else 1)


def parse_header(line: str, delimiter: str) -> List[str]:
  """The column names of a header line ([] for an empty one); csv.Error
  for a malformed one."""
  return next(csv.reader([line], delimiter=delimiter), [])


# ---- Header names -----------------------------------------------------------

# A name kept as it is: a letter, then letters, digits and `_`.
_VALID_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')


def feature_name(title: str, position: int) -> str:
  """The model input name of the column headed `title` at `position` (from
  1): valid as a TensorFlow signature argument. A name of ASCII letters,
  digits and `_` that starts with a letter is kept; in others every other
  character becomes `_` (accents are dropped first), leading and trailing
  `_` go, a leading digit gets `c_`, and an empty name is
  `column_<position>`. It depends on the title alone, except for an empty
  one."""
  name = title
  if not _VALID_NAME.fullmatch(title):
    ascii_title = unicodedata.normalize('NFKD', title).encode(
        'ascii', 'ignore').decode()
    name = re.sub(r'[^A-Za-z0-9_]+', '_', ascii_title).strip('_')
    name = re.sub(r'__+', '_', name)
  if not name:
    return f'column_{position}'
  return f'c_{name}' if name[0].isdigit() else name


def feature_names(header: Sequence[str]) -> List[str]:
  """The model input names of a header's columns (`feature_name`); the
  data gate refuses a header in which two are the same (`check_header`)."""
  return [feature_name(title, position)
          for position, title in enumerate(header, start=1)]


def check_header(path: Path, header: Sequence[str]) -> None:
  """Refuses two columns with one name, or with one model input name:
  compared regardless of case, as TensorFlow's signatures compare them."""
  seen: Dict[str, int] = {}
  for position, (title, name) in enumerate(
      zip(header, feature_names(header)), start=1):
    first = seen.setdefault(name.lower(), position)
    if first == position:
      continue
    if header[first - 1] == title:
      raise InputError(
          f'{path}:1: columns {first} and {position} are both named '
          f'{title!r}; rename one of them (settings could not tell them '
          'apart)')
    raise InputError(
        f'{path}:1: columns {first} ({header[first - 1]!r}) and {position} '
        f'({title!r}) would both be the model input {name!r} (names made '
        'valid, compared regardless of case); rename one of them')


def resolve_column(name: str, header: Sequence[str],
                   names: Sequence[str]) -> Optional[str]:
  """The model name of a column named as in the header or as the model
  names it (the header first); None if neither."""
  for candidates in (header, names):
    normalized = [unicodedata.normalize('NFC', c) for c in candidates]
    wanted = unicodedata.normalize('NFC', name)
    if wanted in normalized:
      return names[normalized.index(wanted)]
  return None


# ---- Missing values ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CsvRules:
  """The settings of these rules that prediction applies to its CSV input
  as training did (data.delimiter, data.na_values)."""
  delimiter: str = ''
  na_values: Tuple[str, ...] = DEFAULT_NA_VALUES

  @classmethod
  def of(cls, config) -> 'CsvRules':
    """The rules of a PipelineConfig (its `data` settings)."""
    return cls(configured_delimiter(config.data.delimiter),
               tuple(config.data.na_values) + ('',))

  @property
  def missing_values(self) -> frozenset:
    """The values read as missing, once trimmed: the markers and ''."""
    return frozenset(self.na_values) | {''}

  def cleaned(self, column: pa.Array) -> pa.Array:
    """A column of text values as training read them: spaces trimmed, a
    missing-value marker empty."""
    column = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.is_in(column, value_set=pa.array(
        self.na_values, pa.string())), '', column)


# ---- Numbers ----------------------------------------------------------------

# A number as CsvExampleGen's Arrow cast reads one (and so the Transform):
# no `+`, no spaces, no thousands separators, no `_`; `inf`/`nan` are
# numbers there (non-finite ones, missing to the model).
NUMBER = re.compile(
    r'-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?'
    r'|-?(?:inf|infinity|nan)',
    re.IGNORECASE)

# Column types, in the order in which they generalise.
UNKNOWN, INT, FLOAT, STRING = range(4)

# Values cast first, before the whole column: a cast parses every value even
# when the first one fails (0.3 us each), and most columns fail one of the
# two casts (a float column the int cast). Failing on a sample decides it.
TYPE_SAMPLE = 1000


def casts(values: pa.Array, arrow_type: pa.DataType) -> bool:
  """Whether every value of a text array is a value of `arrow_type`."""
  try:
    pc.cast(values, arrow_type)
    return True
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    return False


def column_type(values: pa.Array) -> int:
  """TFX's type for a column of text values, judged on the non-empty ones."""
  values = values.filter(pc.not_equal(values, ''))
  if not len(values):
    return UNKNOWN
  for kind, arrow_type in ((INT, pa.int64()), (FLOAT, pa.float64())):
    if (casts(values[:TYPE_SAMPLE], arrow_type) and
        casts(values, arrow_type)):
      return kind
  return STRING
