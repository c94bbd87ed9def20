"""What the coordinator ships to workers: dataset files, and model files for remote workers."""

import pytest

from engine.config import JobSpec, resolve_model_path
from engine.runtime.cluster import files_to_ship


def test_a_dataset_folder_ships_its_train_and_valid_files(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "valid.jsonl").write_text('{"text": "b"}\n')
    job = JobSpec().with_overrides([f'data.path="{tmp_path}"'])
    files = files_to_ship(job, remote=False)
    assert files == {"dataset": tmp_path / "train.jsonl", "valid": tmp_path / "valid.jsonl"}


def test_remote_workers_also_get_a_local_model_folder(tmp_path):
    files = files_to_ship(JobSpec(), remote=True)
    assert files["model/config.json"].parent == files["model/tokenizer.json"].parent
    assert str(files["model/config.json"].parent) == resolve_model_path("demo")
    assert not any(r.startswith("model/") for r in files_to_ship(JobSpec(), remote=False))


def test_a_folder_without_a_train_file_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    job = JobSpec().with_overrides([f'data.path="{tmp_path}"'])
    with pytest.raises(ValueError, match="no train file"):
        files_to_ship(job, remote=False)
