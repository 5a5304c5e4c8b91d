"""Feature selection shared by the preprocessing and model code.

Both receive the same `custom_config` (built from the pipeline configuration),
so which raw columns are model inputs is decided here only. Types are not
configured: a column is numeric or string as the data (its schema) says.
"""

from typing import Any, Dict, Iterable, List, Mapping

LABEL = 'label'
EXCLUDE = 'exclude_features'
CATEGORICAL = 'categorical_features'
OOV_BUCKETS = 'oov_buckets'
# The transformed feature holding each row's vocabulary ids, one per string
# or categorical column (model_input_names order).
CATEGORIES = 'categorical_ids'
# The transformed feature holding each row's z-scores, one per numeric
# column (model_input_names order).
NUMBERS = 'numeric_xf'


def make_custom_config(label: str, exclude_features: Iterable[str],
                       categorical_features: Iterable[str],
                       oov_buckets: int) -> Dict[str, Any]:
  """The custom_config that Transform and the Trainer both receive."""
  return {
      LABEL: label,
      EXCLUDE: sorted(exclude_features),
      CATEGORICAL: sorted(categorical_features),
      OOV_BUCKETS: oov_buckets,
  }


def model_input_names(raw_names: Iterable[str],
                      custom_config: Mapping[str, Any]) -> List[str]:
  """The raw columns the model reads: all but the label and the excluded."""
  skip = set(custom_config[EXCLUDE]) | {custom_config[LABEL]}
  return sorted(name for name in raw_names if name not in skip)
