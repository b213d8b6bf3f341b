from pathlib import Path

from ingest.settings import get_settings


def test_data_dir_moves_everything(monkeypatch, tmp_path):
    monkeypatch.setenv("KONGMING_DATA_DIR", str(tmp_path / "elsewhere"))
    s = get_settings()
    assert s.store_path == tmp_path / "elsewhere" / "store"
    assert s.keyword_dir == tmp_path / "elsewhere" / "keyword"


def test_toml_file_and_env_and_overrides(monkeypatch, tmp_path):
    cfg = tmp_path / "kongming.toml"
    cfg.write_text('collection = "top"\n[ingest]\nchunk_size = 123\nembed_model = "st:/models/x"\n', encoding="utf-8")
    monkeypatch.setenv("KONGMING_CONFIG", str(cfg))
    s = get_settings()
    assert (s.collection, s.chunk_size, s.embed_model) == ("top", 123, "st:/models/x")
    monkeypatch.setenv("KONGMING_CHUNK_SIZE", "200")
    assert get_settings().chunk_size == 200  # env beats the file
    assert get_settings(chunk_size=99, collection=None).chunk_size == 99  # explicit beats env; None is ignored
    assert get_settings().data_dir == Path("data")
