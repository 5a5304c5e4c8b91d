"""Loaded models and their versions, kept in step with the model base paths.

Like TF Serving's file-system source: every `poll_seconds`, each model's base
path is listed; integer subdirectories are versions. The version policy
(latest N, specific versions, or all) says which should be loaded. A version
is loaded only once its directory has stopped changing between two polls and
holds a saved_model.pb, so a half-copied push is never served; it then becomes
the default at once, and versions that fall out of the policy are unloaded
after that (requests in flight keep their reference and finish).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import (Callable, Dict, List, Optional, Sequence, Tuple,
                    TypeVar)

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2

from tfx_e2e.serving.errors import Code, ServingError
from tfx_e2e.serving.model_config import ModelConfig

_log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = 'serving_default'


class SignatureFunction:
  """A loaded signature's function, called with its inputs in flat order.

  Calling a signature by keyword makes TensorFlow bind the tensors to its
  structured signature on every call, about 0.2 ms: as long as the linear
  model itself on one row. The binding's checks (names, dtypes, shapes) are
  done here against the signature's specs instead, and the function is then
  called with its flat inputs. Inputs that fail the checks take the keyword
  call, so the client gets TensorFlow's own error.

  The flat call is `ConcreteFunction._call_flat(tensors, captured_inputs)`,
  a private TensorFlow method, written for TF 2.16.2 (the pinned version);
  the gain is measured in BENCHMARKS.md (grep "flat order": REST p50 1.8-2.1
  -> 1.2 ms, with the other request-path changes). A private method may
  change its arguments or results in any release, so it is probed once at
  load (`probe`): it is used only if it answers a small valid input exactly
  as the public keyword call does; otherwise every call is a keyword call.
  """

  def __init__(self, function):
    self._function = function
    # Signatures take keyword arguments only; flat, they are in tf.nest's
    # order for a dict: sorted keys.
    _, kwargs = function.structured_input_signature
    specs = sorted(kwargs.items())
    self.input_dtypes: Dict[str, tf.DType] = {
        name: spec.dtype for name, spec in specs}
    # (name, dtype, dims or None for any shape): TensorShape's own
    # compatibility check costs more than the rest of the binding.
    self._checks = [(name, spec.dtype, None if spec.shape.rank is None
                     else tuple(spec.shape.as_list())) for name, spec in specs]
    self.flat = False  # until `probe` says the flat call agrees
    self.probe_failure: Optional[str] = None

  def __call__(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    if self.flat and len(inputs) == len(self._checks):
      flat = []
      for name, dtype, dims in self._checks:
        tensor = inputs.get(name)
        if tensor is None or tensor.dtype != dtype:
          break
        if dims is not None:
          shape = tensor.shape
          if len(shape) != len(dims) or any(
              d is not None and d != n for d, n in zip(dims, shape)):
            break
        flat.append(tensor)
      else:
        return self._call_flat(flat)
    return self._function(**inputs)

  def _call_flat(self, flat: List[tf.Tensor]):
    return self._function._call_flat(  # pylint: disable=protected-access
        flat, self._function.captured_inputs)

  def _probe_inputs(self, rows: int) -> Dict[str, tf.Tensor]:
    """A distinct value per input (so that inputs in the wrong order give
    other outputs), `rows` rows where the batch size is free."""
    inputs = {}
    for index, (name, dtype, dims) in enumerate(self._checks):
      shape = [rows] if dims is None else [rows if d is None else d
                                           for d in dims]
      value = str(index + 1).encode() if dtype == tf.string else (
          tf.cast(index + 1, dtype))
      inputs[name] = tf.fill(shape, value)
    return inputs

  def probe(self) -> bool:
    """Whether the flat call answers as the keyword call does; sets `flat`,
    and `probe_failure` to why not.

    One row first, which also tells inputs in the wrong order apart; a
    model may refuse it, and then zero rows, which a model takes without
    seeing values. With one input (the tf.Example signatures, which refuse
    made-up strings, and TensorFlow logs each refusal) there is no order to
    get wrong: zero rows first.
    """
    self.flat, self.probe_failure = False, None
    rows_to_try = (0, 1) if len(self._checks) == 1 else (1, 0)
    try:
      attempts = [self._probe_inputs(rows) for rows in rows_to_try]
    except (TypeError, ValueError, tf.errors.OpError) as e:
      self.probe_failure = f'no probe input for its dtypes ({e})'
      return False
    for inputs in attempts:
      try:
        expected = self._function(**inputs)
      except Exception:  # pylint: disable=broad-except
        continue  # not an input this model takes: try the next
      try:
        got = self._call_flat([inputs[name] for name, _, _ in self._checks])
      except Exception as e:  # pylint: disable=broad-except
        first_line = (str(e).strip().splitlines() or [''])[0]
        self.probe_failure = (f'the flat call raised {type(e).__name__}: '
                              f'{first_line}')
        return False
      difference = _difference(expected, got)
      if difference:
        self.probe_failure = f'the flat call answered otherwise: {difference}'
        return False
      self.flat = True
      return True
    self.probe_failure = 'the keyword call took none of the probe inputs'
    return False


def _difference(expected, got) -> Optional[str]:
  """How `got` differs from `expected` (dicts of output tensors), or None."""
  if not isinstance(got, dict) or set(got) != set(expected):
    return (f'outputs {sorted(got) if isinstance(got, dict) else type(got)}'
            f', not {sorted(expected)}')
  for name in sorted(expected):
    want, have = expected[name], got[name]
    if not isinstance(have, tf.Tensor) or have.dtype != want.dtype or (
        have.shape != want.shape):
      return f'output {name}: {have!r}, not of {want.dtype} {want.shape}'
    want, have = want.numpy(), have.numpy()
    if not np.array_equal(want, have,
                          equal_nan=want.dtype.kind in 'fc'):
      return f'output {name}: {have.tolist()}, not {want.tolist()}'
  return None


class Servable:
  """One loaded version of a model: its signatures, as functions and protos."""

  def __init__(self, name: str, version: int, path: str):
    self.name = name
    self.version = version
    self.path = path
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(
        Path(path, 'saved_model.pb').read_bytes())
    serving_graphs = [m for m in saved_model.meta_graphs
                      if 'serve' in m.meta_info_def.tags]
    if not serving_graphs:
      raise ValueError(f'{path}: no MetaGraph tagged "serve"')
    self.signature_defs: Dict[str, meta_graph_pb2.SignatureDef] = dict(
        serving_graphs[0].signature_def)
    self._loaded = tf.saved_model.load(path, tags=['serve'])
    self.functions = {name: SignatureFunction(self._loaded.signatures[name])
                      for name in self.signature_defs
                      if name in self._loaded.signatures}
    keyword_only = {name: function.probe_failure for name, function
                    in sorted(self.functions.items()) if not function.probe()}
    if keyword_only:
      _log.warning(
          '%s version %d: signatures called by keyword (slower), as the '
          'flat call did not pass its probe: %s', self.name, self.version,
          '; '.join(f'{signature}: {why}'
                    for signature, why in keyword_only.items()))

  def signature(self, name: str):
    """(SignatureDef, function) for `name` ('' = serving_default)."""
    name = name or DEFAULT_SIGNATURE
    if name not in self.signature_defs or name not in self.functions:
      raise ServingError(
          Code.INVALID_ARGUMENT,
          f'Serving signature name: "{name}" not found in signature def')
    return self.signature_defs[name], self.functions[name]


@dataclasses.dataclass
class VersionState:
  state: str                      # LOADING | AVAILABLE | UNLOADING | END
  error: Optional[str] = None     # load failure, if any


def version_fingerprint(path: Path) -> Optional[Tuple]:
  """What changes while a version directory is being written."""
  entries = []
  try:
    for root, _, files in os.walk(path):
      for name in files:
        stat = os.stat(os.path.join(root, name))
        entries.append((os.path.join(root, name), stat.st_size,
                        stat.st_mtime_ns))
  except FileNotFoundError:
    return None
  return tuple(sorted(entries))


def version_dirs(base_path: str) -> Dict[int, Path]:
  """The versions under a model base path: its integer-named directories."""
  base = Path(base_path)
  if not base.is_dir():
    return {}
  return {int(p.name): p for p in base.iterdir()
          if p.name.isdigit() and p.is_dir()}


T = TypeVar('T')


class VersionWatch:
  """Which versions under one model base path may be used: the one rule
  behind `serve`, `predict` and `stream`.

  A version is ready once it holds a saved_model.pb, has stopped changing
  (with `settle`: unchanged between two looks, so a push still being
  copied is left alone) and has not failed to load as it is now (a failed
  version is tried again once its files change). Of the ready versions,
  the newest that loads is used; the others are skipped, with the reason
  in `skipped`.
  """

  def __init__(self, base_path: str, settle: bool = True):
    self.base_path = base_path
    self._settle = settle
    self._seen: Dict[int, Optional[Tuple]] = {}
    self._failed: Dict[int, Optional[Tuple]] = {}
    self.skipped: Dict[int, str] = {}  # version -> why it is not used

  def ready(self) -> List[int]:
    """The ready versions, oldest first (see the class doc)."""
    ready, versions = [], version_dirs(self.base_path)
    for gone in set(self._seen) - set(versions):  # deleted directories
      for memory in (self._seen, self._failed, self.skipped):
        memory.pop(gone, None)
    for version, path in sorted(versions.items()):
      fingerprint = version_fingerprint(path)
      previous, self._seen[version] = self._seen.get(version), fingerprint
      if not (path / 'saved_model.pb').is_file():
        self.skipped[version] = 'no saved_model.pb (an incomplete copy?)'
      elif fingerprint is None or (self._settle and fingerprint != previous):
        self.skipped[version] = 'still being written'
      elif version in self._failed:
        if self._failed[version] == fingerprint:
          continue  # still as it was when it failed: the reason stands
        del self._failed[version]
        ready.append(version)
      else:
        self.skipped.pop(version, None)
        ready.append(version)
    return ready

  def failed(self, version: int, error: Exception) -> None:
    """Records that `version` did not load; not tried again unchanged."""
    self._failed[version] = self._seen.get(version)
    message = str(error).strip().split('\n')[0] or type(error).__name__
    self.skipped[version] = f'does not load: {message}'

  def load_newest(self, load: Callable[[str], T], newer_than: int = -1
                  ) -> Optional[Tuple[int, T]]:
    """(version, load(its directory)) for the newest ready version above
    `newer_than` that loads, or None; failures go to `skipped`."""
    for version in sorted(self.ready(), reverse=True):
      if version <= newer_than:
        break
      try:
        loaded = load(str(Path(self.base_path) / str(version)))
      except Exception as e:  # pylint: disable=broad-except
        _log.error('loading version %d under %s failed: %s', version,
                   self.base_path, e)
        self.failed(version, e)
        continue
      self.skipped.pop(version, None)
      return version, loaded
    return None


def load_newest_version(base_path: str, load: Callable[[str], T]
                        ) -> Tuple[int, T, Dict[int, str]]:
  """The newest version under `base_path` that loads, now (a one-off
  choice, as `predict` makes: no waiting for a version to settle).

  Returns:
    (version, load(its directory), {newer version skipped: why}).

  Raises:
    FileNotFoundError: no version loads; the message says why for each.
  """
  watch = VersionWatch(base_path, settle=False)
  found = watch.load_newest(load)
  if found is None:
    reasons = ''.join(f'; version {v}: {why}'
                      for v, why in sorted(watch.skipped.items(), reverse=True))
    raise FileNotFoundError(f'no model version that loads under {base_path}'
                            f'{reasons}')
  version, loaded = found
  return version, loaded, {v: why for v, why in watch.skipped.items()
                           if v > version}


class ModelManager:
  """Keeps the loaded versions of every configured model up to date."""

  def __init__(self, configs: Sequence[ModelConfig], poll_seconds: float = 1.0):
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
      raise ValueError(f'duplicate model names: {names}')
    self.configs = {c.name: c for c in configs}
    self.poll_seconds = poll_seconds
    # name -> version -> Servable; replaced whole, never mutated, so readers
    # need no lock.
    self._servables: Dict[str, Dict[int, Servable]] = {n: {} for n in names}
    self._states: Dict[str, Dict[int, VersionState]] = {n: {} for n in names}
    self._watches = {c.name: VersionWatch(c.base_path) for c in configs}
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._lock = threading.Lock()  # one poll at a time

  # --- lookups (request path) ---

  def servable(self, name: str, version: Optional[int] = None,
               label: Optional[str] = None) -> Servable:
    if name not in self._servables:
      raise ServingError(Code.NOT_FOUND,
                         f'Servable not found for request: Latest({name})')
    versions = self._servables[name]
    if label is not None:
      labels = dict(self.configs[name].labels)
      if label not in labels:
        raise ServingError(
            Code.INVALID_ARGUMENT,
            f'Unrecognized servable version label: {label}')
      version = labels[label]
    if version is None:
      if not versions:
        raise ServingError(Code.NOT_FOUND,
                           f'Servable not found for request: Latest({name})')
      return versions[max(versions)]
    if version not in versions:
      raise ServingError(
          Code.NOT_FOUND,
          f'Servable not found for request: Specific({name}, {version})')
    return versions[version]

  def skipped(self, name: str) -> Dict[int, str]:
    """{version: why it is not served} for the versions left out."""
    return dict(self._watches[name].skipped)

  def states(self, name: str) -> Dict[int, VersionState]:
    if name not in self._states:
      raise ServingError(Code.NOT_FOUND,
                         f'Could not find any versions of model {name}')
    return dict(self._states[name])

  # --- polling ---

  def start(self) -> None:
    # A version counts as complete once unchanged between two looks; at
    # start-up the second look comes soon after the first.
    self.poll()
    time.sleep(min(self.poll_seconds, 0.5))
    self.poll()
    self._thread = threading.Thread(target=self._poll_loop, daemon=True,
                                    name='model-poller')
    self._thread.start()

  def stop(self) -> None:
    self._stop.set()
    if self._thread:
      self._thread.join()

  def _poll_loop(self) -> None:
    while not self._stop.wait(self.poll_seconds):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        _log.exception('polling the model base paths failed')

  def poll(self) -> None:
    with self._lock:
      for config in self.configs.values():
        self._poll_model(config)

  def _poll_model(self, config: ModelConfig) -> None:
    name = config.name
    current = self._servables[name]
    loaded = dict(current)
    candidates = set(self._watches[name].ready()) | set(current)
    # A selected version that fails to load gives way to the next one the
    # policy selects: the newest versions that load are served.
    failed = True
    while failed:
      failed = False
      for version in config.policy.select(sorted(candidates)):
        if version not in loaded:
          servable = self._load(config, version)
          if servable:
            loaded[version] = servable
          else:
            candidates.discard(version)
            failed = True
    # Keep what the policy selects among what is loaded: a version that
    # failed to load leaves the previous one serving. A deleted directory
    # unloads its version.
    base = Path(config.base_path)
    keep = set(config.policy.select(
        [v for v in loaded if (base / str(v)).is_dir()]))
    for version in [v for v in loaded if v not in keep]:
      del loaded[version]
      self._states[name][version] = VersionState('END')
      _log.info('unloaded %s version %d', name, version)
    self._servables[name] = loaded  # the swap: one reference assignment

  def _load(self, config: ModelConfig, version: int) -> Optional[Servable]:
    name = config.name
    self._states[name][version] = VersionState('LOADING')
    path = str(Path(config.base_path) / str(version))
    try:
      servable = Servable(name, version, path)
    except Exception as e:  # pylint: disable=broad-except
      _log.error('loading %s version %d failed: %s', name, version, e)
      self._watches[name].failed(version, e)  # retried once it changes
      self._states[name][version] = VersionState('END', str(e))
      return None
    self._states[name][version] = VersionState('AVAILABLE')
    _log.info('loaded %s version %d from %s', name, version, path)
    return servable
