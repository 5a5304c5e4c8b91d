"""Installable package: the pipeline (`pipeline`) and its module code (`components`)."""

from setuptools import find_packages, setup

setup(
    name='tfx-e2e',
    version='0.1.0',
    description='End-to-end TFX pipeline on Apache Beam: CSV to TF Serving.',
    python_requires='>=3.10,<3.11',
    packages=find_packages(include=['pipeline', 'pipeline.*',
                                    'components', 'components.*',
                                    'serving', 'serving.*']),
    install_requires=[
        'tfx[kfp]==1.16.0',
        'apache-beam[gcp]==2.59.0',
        'tensorflow==2.16.2',
        'tf-keras==2.16.0',
        'PyYAML>=6',
        'matplotlib>=3.8,<3.10',  # plots in notebooks and the HTML report
    ],
    # pycurl: bench/serving_bench.py's C HTTP client (libcurl).
    extras_require={'test': ['pytest', 'hypothesis', 'schemathesis',
                             'pycurl']},
    entry_points={'console_scripts': ['tfx-e2e=pipeline.cli:main']},
)
