"""Test session set-up for every test folder: the process environment first,
before any test module imports TensorFlow."""

from tfx_e2e.pipeline import environment

environment.configure()
