"""`pip install .` adds one top-level package, `tfx_e2e`, made of the
repository's folders, without the unit tests that sit beside the modules."""

import ast
import re
import shutil
import subprocess
import sys
import zipfile

from tfx_e2e.pipeline.config import REPO_ROOT


def _rooms():
  setup = (REPO_ROOT / 'setup.py').read_text()
  return ast.literal_eval(re.search(r'^ROOMS = (\[.*?\])', setup,
                                    re.M | re.S).group(1))


def test_the_wheel_holds_one_package_made_of_the_repositorys_folders(
    tmp_path):
  # The venv's own setuptools builds it: no download. pip builds in the
  # tree, whose build/ folder goes again if the build made it.
  build = REPO_ROOT / 'build'
  had_build = build.exists()
  try:
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--quiet',
                    '--no-deps', '--no-build-isolation', '-w', str(tmp_path),
                    str(REPO_ROOT)], check=True, capture_output=True,
                   timeout=300)
  finally:
    if not had_build:
      shutil.rmtree(build, ignore_errors=True)
  (wheel,) = tmp_path.glob('*.whl')
  names = zipfile.ZipFile(wheel).namelist()
  assert {name.split('/')[0] for name in names} == {
      'tfx_e2e', 'tfx_e2e-0.1.0.dist-info'}
  # Every module of every room, but no test module.
  for room in _rooms():
    folder = REPO_ROOT / room
    for module in folder.glob('*.py'):
      path = f'tfx_e2e/{room}/{module.name}'
      assert (path in names) == (not module.stem.endswith('_test')), path
  assert 'tfx_e2e/serving/openapi.yaml' in names
  # Each folder of the repository that holds package code is a room.
  code_folders = {path.parent.relative_to(REPO_ROOT).as_posix()
                  for path in REPO_ROOT.glob('*/**/__init__.py')
                  if path.parts[len(REPO_ROOT.parts)] not in (
                      'tests', '.venv', 'bench', 'build')}
  assert code_folders == set(_rooms())
