"""The fast CsvExampleGen's hash bucket is TFX's own, for any line.

A row's split must not depend on which executor wrote it: a run switched
between the fast and the stock ExampleGen (`beam.fast_paths`) has to put
every row in the same split. So `bucket` is compared with TFX's partition
function itself, on many generated lines, not with a copy of its formula.
"""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2

from tfx_e2e.components.executors import csv_example_gen

# TFX's partition function (what ExampleGen's beam.Partition calls). For a
# raw record without partition_feature_name, the key is the record's bytes.
_tfx_partition = base_example_gen_executor._PartitionFn  # pylint: disable=protected-access
_NO_FEATURE = example_gen_pb2.SplitConfig()

_LINES = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda text: text.encode('utf-8')),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
            max_size=200).map(str.encode),
    st.binary(min_size=1000, max_size=5000),
    st.just(b''))


@settings(max_examples=500, deadline=None)
@given(line=_LINES, total=st.integers(min_value=1, max_value=2000))
def test_bucket_is_tfxs_partition_of_one_bucket_a_split(line, total):
  # With one bucket a split (cumulative [1, 2, ..., total]), TFX's split
  # index is its hash bucket itself.
  assert csv_example_gen.bucket(line, total) == _tfx_partition(
      line, total, list(range(1, total + 1)), _NO_FEATURE)


@settings(max_examples=300, deadline=None)
@given(line=_LINES, total=st.integers(min_value=1, max_value=2**128))
def test_bucket_matches_tfxs_formula_for_large_bucket_counts(line, total):
  # Too many buckets to list for _PartitionFn: the formula it applies
  # (base_example_gen_executor.py), over the whole 256-bit digest.
  assert csv_example_gen.bucket(line, total) == int(
      hashlib.sha256(line).hexdigest(), 16) % total
