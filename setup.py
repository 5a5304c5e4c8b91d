"""Installable package: one top-level package, `tfx_e2e`.

The repository's folders are the package's rooms, in the order data flows:
`pipeline/` (configuration, definition, input check, runners),
`components/` (module code; `components/executors/` the fast executors),
`serving/` and `inference/` (what consumes the pushed model) and `reports/`
(results and reports), with `cli/` the command line over them all.
"""

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithoutTests(build_py):
  """Leaves the unit tests beside the modules (`*_test.py`) out of a wheel:
  they import the repository's tests/ helpers, which are not installed."""

  def find_package_modules(self, package, package_dir):
    return [module for module in super().find_package_modules(
        package, package_dir) if not module[1].endswith('_test')]


ROOMS = ['pipeline', 'components', 'components/executors', 'serving',
         'inference', 'reports', 'cli', 'formats', 'monitoring']

setup(
    name='tfx-e2e',
    version='0.1.0',
    description='End-to-end TFX pipeline on Apache Beam: CSV to TF Serving.',
    python_requires='>=3.10,<3.11',
    # `tfx_e2e` itself is an implicit namespace: it has no folder of its own.
    packages=['tfx_e2e.' + room.replace('/', '.') for room in ROOMS],
    package_dir={'tfx_e2e.' + room.replace('/', '.'): room for room in ROOMS},
    package_data={'tfx_e2e.serving': ['openapi.yaml']},
    install_requires=[
        'tfx[kfp]==1.16.0',
        # The Kubernetes platform config of the compiled spec (volumes).
        'kfp-kubernetes==1.0.0',
        'apache-beam[gcp]==2.59.0',
        'tensorflow==2.16.2',
        'tf-keras==2.16.0',
        'PyYAML>=6',
        'matplotlib>=3.8,<3.10',  # plots in notebooks and the HTML report
    ],
    # pycurl: bench/serving_bench.py's C HTTP client (libcurl).
    # cel-python: the CEL evaluator of the Kubeflow replay (as KFP's driver
    # evaluates trigger conditions); moto with Flask: an S3 server on
    # loopback for the replay's object-store root.
    extras_require={'test': ['pytest', 'hypothesis', 'schemathesis',
                             'pycurl', 'cel-python', 'moto[s3]', 'flask',
                             'flask-cors']},
    entry_points={'console_scripts': ['tfx-e2e=tfx_e2e.cli:main']},
    cmdclass={'build_py': BuildPyWithoutTests},
)
