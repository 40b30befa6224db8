"""The client smoke command (``decal stream`` / ``python -m decal.server.smoke``) and the
serve command's config errors."""

from __future__ import annotations

from PIL import Image

from decal.server import serve, smoke

from coco_factory import write_coco_dataset
from server_helpers import make_config, running_server


def test_stream_smoke_command(tmp_path, capsys) -> None:
    synth = write_coco_dataset(tmp_path / "synth", num_images=4, seed=1)
    with running_server(make_config({"synth": synth})) as server:
        preview = tmp_path / "preview.png"
        code = smoke.main([server.grpc_address, "--dataset", "synth", "--batches", "3", "--image-encoding", "jpeg", "--preview", str(preview)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "datasets ['synth']" in out and "3 batches, 6 images" in out and "kB/image" in out
        with Image.open(preview) as picture:
            assert picture.format == "PNG"
        assert smoke.main([server.grpc_address, "--dataset", "../etc"]) == 1
        assert "INVALID_ARGUMENT: dataset:" in capsys.readouterr().err


def test_serve_reports_config_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "server.toml"
    bad.write_text("[limits]\nmax_streams = -1\n")
    assert serve.main(["--config", str(bad)]) == 2
    assert "limits.max_streams" in capsys.readouterr().err
