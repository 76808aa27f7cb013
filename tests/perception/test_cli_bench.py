from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import typer
from typer.testing import CliRunner

from rtvla.bench.perception import ReferenceVisionSystem, run_perception_bench
from rtvla.cli import perceive as perceive_cli
from rtvla.perception import ColorDetector, SyntheticSource

ROW_KEYS = {"pipeline", "detector", "fps", "frame_age_ms", "dropped", "stale_processed"}


def app() -> typer.Typer:
    root, bench = typer.Typer(), typer.Typer()
    root.add_typer(bench, name="bench")
    perceive_cli.register(root, bench)
    return root


def test_bench_rows_have_the_issue_layout():
    rows = run_perception_bench(0.8, detectors=("color",))
    assert [(r["pipeline"], r["detector"]) for r in rows] == [("rtvla", "color"),
                                                              ("reference", "color")]
    for r in rows:
        assert set(r) == ROW_KEYS and set(r["frame_age_ms"]) == {"p50", "p99"}
        assert r["fps"] > 5
    assert rows[0]["stale_processed"] == 0


def test_reference_design_processes_backlog_in_order():
    """With a detector slower than the camera the deque hands out old frames."""

    pause = threading.Event()

    class Slow(ColorDetector):
        def infer(self, prepared, image_shape=()):
            pause.wait(0.06)  # a detector slower than the 60 fps camera
            return super().infer(prepared, image_shape)

    src = SyntheticSource(160, 120, fps=60)
    ref = ReferenceVisionSystem(src, Slow(name="slow"), input_resolution=(160, 120))
    src.open()
    ref.start()
    pause.wait(0.8)
    ref.stop()
    src.close()
    assert ref.processed >= 3
    assert ref.stale_processed >= 1  # newer frames were waiting in the deque


def test_bench_cli_writes_json_and_plot(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app(), ["bench", "perception", "--seconds", "0.5",
                                     "--detectors", "onnx", "--onnx-stem", "4",
                                     "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert {r["pipeline"] for r in rows} == {"rtvla", "reference"}
    assert all(r["detector"] == "onnx" for r in rows)
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_perceive_on_a_video_file_saves_annotated_frames(tmp_path):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    src = SyntheticSource(160, 120)
    for i in range(20):
        w.write(cv2.cvtColor(src.render(i / 30, i + 1, 0).image, cv2.COLOR_RGB2BGR))
    w.release()
    out, ann = tmp_path / "p.json", tmp_path / "ann"
    res = CliRunner().invoke(app(), ["perceive", str(video), "--resolution", "160x120",
                                     "--seconds", "3", "--json", str(out),
                                     "--save-annotated", str(ann)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["pipeline"]["processed"] >= 5
    assert set(data["last_detections"]["frame_size"]) == {160, 120}
    labels = {d["label"] for d in data["last_detections"]["detections"]}
    assert labels >= {"red", "blue"}
    saved = sorted(ann.glob("*.jpg"))
    assert saved and cv2.imread(str(saved[0])) is not None
    assert np.asarray(cv2.imread(str(saved[0]))).shape == (120, 160, 3)


def test_perceive_bad_inputs_exit_with_a_clear_error(tmp_path):
    def run(*args):
        res = CliRunner().invoke(app(), list(args))
        return res.exit_code, " ".join(res.output.split())

    code, out = run("perceive", str(tmp_path / "nope.mp4"), "--seconds", "1")
    assert code == 2 and "no such file" in out
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    code, out = run("perceive", "synthetic", "--detector", "onnx", "--model", str(bad))
    assert code == 2 and "cannot load model" in out
    code, out = run("perceive", "synthetic", "--resolution", "big")
    assert code == 2 and "640x480" in out
