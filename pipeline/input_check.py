"""The data gate in front of CsvExampleGen.

CsvExampleGen fails on bad CSVs deep inside a Beam job (or, for a missing
label, only at the Trainer). This scan finds those problems first and names
the file, line and column. Rows whose label is missing or not finite cannot be
trained or evaluated on: they are dropped (counted in the run summary) by
reading a filtered copy, stored under the output directory by content hash so
that an unchanged second run reads the very same file and hits the cache.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from pipeline.config import PipelineConfig


class InputError(ValueError):
  """The input data cannot be used; the message names the file and problem."""


@dataclasses.dataclass
class InputReport:
  files: List[str]
  columns: List[str]
  rows: int                 # data rows read (header excluded)
  dropped_rows: int         # rows without a usable label
  dropped_examples: List[str]  # the first few, as 'file:line (reason)'
  path: str                 # what CsvExampleGen reads: the input or its copy


_MAX_DROPPED_EXAMPLES = 5


def _input_files(path: Path) -> List[Path]:
  if not path.exists():
    raise InputError(f'{path}: no such file or directory')
  if path.is_dir():
    files = sorted(p for p in path.glob('*.csv') if p.is_file())
    if not files:
      raise InputError(f'{path}: directory holds no *.csv files')
    return files
  return [path]


def _records(path: Path, digest=None) -> Iterator[Tuple[int, List[str]]]:
  """(line number, fields) for each record, streamed (a file of any size
  takes little memory); feeds the raw bytes to `digest` first, if given."""
  try:
    if digest is not None:
      with open(path, 'rb') as raw:
        for block in iter(lambda: raw.read(1 << 20), b''):
          digest.update(block)
    text = open(path, newline='', encoding='utf-8-sig')  # pylint: disable=consider-using-with
  except OSError as e:
    raise InputError(f'{path}: cannot read: {e.strerror}') from e
  with text:
    reader = csv.reader(text)
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
      raise _not_utf8(path) from None


def _not_utf8(path: Path) -> InputError:
  """The error for the first line of `path` that is not UTF-8. (The text
  reader decodes ahead of the line it yields, so its position is not it.)"""
  with open(path, 'rb') as raw:
    for number, line in enumerate(raw, start=1):
      try:
        line.decode('utf-8')
      except UnicodeDecodeError as e:
        return InputError(f'{path}:{number}: not valid UTF-8 text '
                          f'(byte {line[e.start]:#04x})')
  return InputError(f'{path}: not valid UTF-8 text')


_NOT_NUMERIC = 'not a number'


def _label_problem(value: str) -> Optional[str]:
  """Why a label value is unusable, or None if it is a finite number."""
  if value.strip() == '':
    return 'missing label'
  try:
    number = float(value)
  except ValueError:
    return _NOT_NUMERIC
  return None if math.isfinite(number) else f'non-finite label {value!r}'


def _check_columns(config: PipelineConfig, path: Path,
                   header: Sequence[str]) -> None:
  if config.data.label not in header:
    raise InputError(f'{path}: no label column {config.data.label!r} '
                     f'(columns: {", ".join(header)})')
  for setting in ('exclude_features', 'categorical_features',
                  'slice_features'):
    unknown = [c for c in getattr(config.data, setting) if c not in header]
    if unknown:
      raise InputError(f'{path}: data.{setting} names columns the data does '
                       f'not have: {", ".join(unknown)}')


def check_input(config: PipelineConfig) -> InputReport:
  """Validates the CSV input of `config`; returns what ExampleGen should read.

  Raises InputError for data that cannot be used.
  """
  data_path = Path(config.data.path)
  files = _input_files(data_path)
  digest = hashlib.sha256(config.data.label.encode())
  header: Optional[List[str]] = None
  dropped_lines = set()  # (file, line) of rows without a usable label
  rows = 0
  dropped_examples: List[str] = []
  for path in files:
    records = _records(path, digest)
    first = next(records, None)
    if first is None or not any(field.strip() for field in first[1]):
      raise InputError(f'{path}: empty file (no header row)')
    file_header = first[1]
    if header is None:
      header = file_header
      _check_columns(config, path, header)
      label_index = header.index(config.data.label)
    elif file_header != header:
      raise InputError(f'{path}: header differs from {files[0]}: '
                       f'{",".join(file_header)}')
    file_rows = 0
    for line, fields in records:
      if not fields:
        continue  # blank line
      file_rows += 1
      if len(fields) != len(header):
        raise InputError(f'{path}:{line}: {len(fields)} fields, but the '
                         f'header has {len(header)}')
      problem = _label_problem(fields[label_index])
      if problem == _NOT_NUMERIC:
        raise InputError(
            f'{path}:{line}: label {config.data.label!r} is not numeric: '
            f'{fields[label_index]!r}')
      if problem:
        dropped_lines.add((path, line))
        if len(dropped_examples) < _MAX_DROPPED_EXAMPLES:
          dropped_examples.append(f'{path.name}:{line} ({problem})')
    if file_rows == 0:
      raise InputError(f'{path}: no data rows after the header')
    rows += file_rows

  if len(dropped_lines) == rows:
    raise InputError(f'{data_path}: no row has a usable label '
                     f'{config.data.label!r}')
  path = str(data_path)
  if dropped_lines:
    path = _write_filtered_copy(config, digest.hexdigest()[:16], files,
                                dropped_lines)
  return InputReport(files=[str(f) for f in files], columns=list(header),
                     rows=rows, dropped_rows=len(dropped_lines),
                     dropped_examples=dropped_examples, path=path)


def _write_filtered_copy(config: PipelineConfig, key: str,
                         files: List[Path], dropped_lines) -> str:
  """One CSV of every input row but the dropped ones (a second, cheap pass)."""
  target = config.output_path / 'input' / key / 'data.csv'
  if target.exists():  # same input as a previous run: keep the file (cache)
    return str(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  partial = target.with_suffix('.csv.partial')
  with open(partial, 'w', newline='', encoding='utf-8') as out:
    writer = csv.writer(out, lineterminator='\n')
    for index, path in enumerate(files):
      for line, fields in _records(path):
        if fields and (line > 1 or index == 0) and (
            (path, line) not in dropped_lines):
          writer.writerow(fields)
  os.replace(partial, target)  # never leave a half-written input behind
  return str(target)
