"""formats.files: a replaced file is whole, old or new, never a part."""

import os
import subprocess
import sys

import pytest

from tfx_e2e.formats import files


def test_writes_text_and_bytes(tmp_path):
  target = tmp_path / 'out.csv'
  files.write_atomically(target, 'a,b\n1,2\n')
  assert target.read_text(encoding='utf-8') == 'a,b\n1,2\n'
  files.write_atomically(str(target), b'\x00\xff')
  assert target.read_bytes() == b'\x00\xff'
  assert os.listdir(tmp_path) == ['out.csv']


def test_text_is_utf8_and_newlines_kept(tmp_path):
  target = tmp_path / 'out.txt'
  files.write_atomically(target, 'é\r\nx\n')
  assert target.read_bytes() == 'é\r\nx\n'.encode('utf-8')


def test_failure_mid_write_keeps_old_file_and_no_temporary(tmp_path):
  target = tmp_path / 'out.csv'
  target.write_text('old\n')
  with pytest.raises(RuntimeError, match='disk full'):
    with files.atomic_output(target) as out:
      out.write('new, half')
      out.flush()
      # The half-written file exists under its temporary name by now.
      assert len(os.listdir(tmp_path)) == 2
      raise RuntimeError('disk full')
  assert target.read_text() == 'old\n'
  assert os.listdir(tmp_path) == ['out.csv']


def test_failed_write_of_new_file_leaves_nothing(tmp_path):
  target = tmp_path / 'new.csv'
  with pytest.raises(KeyboardInterrupt):
    with files.atomic_output(target, 'wb') as out:
      out.write(b'x')
      raise KeyboardInterrupt
  assert os.listdir(tmp_path) == []


def test_failed_rename_keeps_old_file_and_no_temporary(tmp_path, monkeypatch):
  target = tmp_path / 'out.csv'
  target.write_text('old\n')

  def fail(*args):
    raise OSError('rename failed')

  monkeypatch.setattr(files.os, 'replace', fail)
  with pytest.raises(OSError, match='rename failed'):
    files.write_atomically(target, 'new\n')
  assert target.read_text() == 'old\n'
  assert os.listdir(tmp_path) == ['out.csv']


def test_new_file_has_the_usual_permissions(tmp_path):
  target = tmp_path / 'out.csv'
  files.write_atomically(target, 'x')
  plain = tmp_path / 'plain'
  plain.write_text('x')
  assert target.stat().st_mode == plain.stat().st_mode


def test_temporary_name_is_beside_the_target_and_hidden():
  name = files.temporary_name('/data/out/predictions.csv')
  assert name.startswith('/data/out/.predictions.csv.tmp-')
  remote = files.temporary_name('gs://bucket/out/predictions.csv')
  assert remote.startswith('gs://bucket/out/.predictions.csv.tmp-')
  assert files.temporary_name('x') != files.temporary_name('x')


def test_only_whole_file_modes():
  with pytest.raises(ValueError):
    with files.atomic_output('/tmp/never', 'a'):
      pass


def test_remote_paths_go_through_gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  target = 'ram://formats_files_test/out.txt'
  files.write_atomically(target, 'old')
  with pytest.raises(RuntimeError):
    with files.atomic_output(target) as out:
      out.write('new')
      raise RuntimeError('interrupted')
  with tf.io.gfile.GFile(target) as f:
    assert f.read() == 'old'
  files.write_atomically(target, b'new')
  with tf.io.gfile.GFile(target, 'rb') as f:
    assert f.read() == b'new'
  assert tf.io.gfile.listdir('ram://formats_files_test/') == ['out.txt']


def test_local_writes_do_not_import_tensorflow(tmp_path):
  code = ('import sys; from tfx_e2e.formats import files; '
          'files.write_atomically(sys.argv[1], "x"); '
          'assert "tensorflow" not in sys.modules')
  subprocess.run([sys.executable, '-c', code, str(tmp_path / 'x')],
                 check=True)
  assert (tmp_path / 'x').read_text() == 'x'
