"""`captioning caption`: bad files, resuming after interruptions, CSV, gallery, several processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from test_images import plant_bad_files  # tests/ is on sys.path (rootdir-relative imports)

from captioning.caption import caption
from captioning.cli import main as cli_main
from captioning.gallery import write_gallery
from captioning.records import CaptionFile, ErrorLog, errors_path, merge_parts, part_path, repair_tail

QUIET = {"progress": False, "num_workers": 0}


def _records(path: Path) -> list[dict]:
    return list(CaptionFile(path).records())


def _same_records(got: list[dict], expected: list[dict]) -> None:
    """Same images in the same order with the same captions (log-probs to float noise)."""
    assert [(r["image"], r["caption"]) for r in got] == [(r["image"], r["caption"]) for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert float(a["log_prob"]) == pytest.approx(float(b["log_prob"]), abs=2e-3)


@pytest.fixture(scope="module")
def photos(shapes_root, tmp_path_factory) -> Path:
    """24 good images of mixed formats and modes (PNG, JPEG, CMYK JPEG, RGBA, 16-bit, EXIF-rotated)."""
    folder = tmp_path_factory.mktemp("photos")
    for i, source in enumerate(sorted((shapes_root / "test").glob("*.png"))[:24]):
        image = Image.open(source).convert("RGB")
        kind = i % 6
        if kind == 0:
            shutil.copy(source, folder / f"{i:02d}.png")
        elif kind == 1:
            image.resize((160, 120)).save(folder / f"{i:02d}.jpg", quality=90)
        elif kind == 2:
            image.convert("CMYK").save(folder / f"{i:02d}.jpeg")
        elif kind == 3:
            image.convert("RGBA").save(folder / f"{i:02d}.webp")
        elif kind == 4:
            image.convert("L").point(lambda v: v * 257).convert("I").save(folder / f"{i:02d}.tiff")
        else:
            exif = Image.Exif()
            exif[0x0112] = 6
            image.rotate(90, expand=True).save(folder / f"{i:02d}.JPG", exif=exif)
    return folder


def test_bad_files_are_skipped_and_reported_and_every_good_file_captioned_once(
    photos, tiny_checkpoint, tmp_path, capsys
):
    folder = tmp_path / "mixed"
    shutil.copytree(photos, folder)
    expected_bad = plant_bad_files(folder / "bad", (photos / "00.png").read_bytes())
    out = tmp_path / "captions.jsonl"
    summary = caption(
        str(tiny_checkpoint), str(folder), str(out), recursive=True, batch_size=5, num_workers=2, progress=False,
        max_pixels=100_000,
    )  # fmt: skip
    good = sorted(str(p) for p in photos.iterdir())
    records = _records(out)
    assert sorted(r["image"].replace(str(folder), str(photos)) for r in records) == good  # each good file once
    assert all(r["caption"] for r in records)
    errors = {Path(r["image"]).name: r["error"] for r in _records(out.with_name("captions.jsonl.errors.jsonl"))}
    assert errors.keys() == expected_bad.keys()
    for name, word in expected_bad.items():
        assert word.lower() in errors[name].lower()
    assert summary["captioned"] == len(good) and summary["failed"] == len(expected_bad) and summary["skipped"] == 0
    printed = capsys.readouterr().out
    assert f"captioned {len(good)} images" in printed and f"failed {len(expected_bad)}" in printed
    assert all(name in printed for name in expected_bad)  # reasons in the summary too


def test_every_file_failing_is_an_error(tiny_checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"")
    (tmp_path / "in" / "b.png").write_text("no")
    with pytest.raises(SystemExit, match=r"no image could be read \(2 images failed\)"):
        caption(str(tiny_checkpoint), str(tmp_path / "in"), str(tmp_path / "out.jsonl"), **QUIET)
    with pytest.raises(SystemExit, match="no images found"):
        caption(str(tiny_checkpoint), str(tmp_path / "in" / "*.gif"), str(tmp_path / "out.jsonl"), **QUIET)


@pytest.fixture(scope="module")
def uninterrupted(photos, tiny_checkpoint, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("full") / "captions.jsonl"
    caption(str(tiny_checkpoint), str(photos), str(out), batch_size=4, **QUIET)
    return _records(out)


def test_limit_then_rerun_resumes_to_the_uninterrupted_output(photos, tiny_checkpoint, uninterrupted, tmp_path):
    out = tmp_path / "captions.jsonl"
    first = caption(str(tiny_checkpoint), str(photos), str(out), batch_size=4, limit=10, **QUIET)
    assert first["captioned"] == 10 and first["not_attempted"] == 14 and len(_records(out)) == 10
    second = caption(str(tiny_checkpoint), str(photos), str(out), batch_size=4, **QUIET)
    assert second["skipped"] == 10 and second["captioned"] == 14
    _same_records(_records(out), uninterrupted)
    third = caption(str(tiny_checkpoint), str(photos), str(out), batch_size=4, **QUIET)
    assert third["captioned"] == 0 and third["skipped"] == 24
    _same_records(_records(out), uninterrupted)  # nothing added twice


def test_a_torn_last_line_is_cut_and_its_image_captioned_again(photos, tiny_checkpoint, uninterrupted, tmp_path):
    out = tmp_path / "captions.jsonl"
    caption(str(tiny_checkpoint), str(photos), str(out), limit=0, **QUIET)  # writes the run's settings only
    lines = out.with_suffix(".tmp")
    lines.write_text("".join(json.dumps(r) + "\n" for r in uninterrupted[:7]))
    out.write_bytes(lines.read_bytes()[:-25])  # a crash in the middle of writing line 7
    assert repair_tail(lines) == 0  # whole lines are left alone
    summary = caption(str(tiny_checkpoint), str(photos), str(out), batch_size=4, **QUIET)
    assert summary["skipped"] == 6 and summary["captioned"] == 18
    _same_records(_records(out), uninterrupted)


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_output(photos, tiny_checkpoint, uninterrupted, tmp_path):
    """A real interruption: the command runs in a subprocess, SIGKILLed once its first batch is on disk."""
    folder = tmp_path / "many"
    folder.mkdir()
    for copy in range(8):  # 192 images, batches of 2: the run is still going when the first lands
        for p in photos.iterdir():
            os.symlink(p, folder / f"{copy}-{p.name}")
    out = tmp_path / "captions.jsonl"
    command = [
        sys.executable, "-m", "captioning.cli", "caption", "--checkpoint", str(tiny_checkpoint), "--input", str(folder),
        "--output", str(out), "--batch_size", "2", "--num_workers", "0", "--progress", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]  # still running: a real interruption
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    written = out.read_bytes()
    assert written.endswith(b"\n") and all(json.loads(line) for line in written.splitlines())  # whole lines only
    partial = len(written.splitlines())
    assert 0 < partial < 192
    summary = caption(str(tiny_checkpoint), str(folder), str(out), batch_size=16, **QUIET)
    assert summary["skipped"] == partial and summary["captioned"] == 192 - partial
    by_name = {Path(r["image"]).name: r["caption"] for r in uninterrupted}
    records = _records(out)
    assert len(records) == 192 == len({r["image"] for r in records})
    assert all(r["caption"] == by_name[Path(r["image"]).name.split("-", 1)[1]] for r in records)


def test_csv_output_has_one_header_and_resumes(photos, tiny_checkpoint, uninterrupted, tmp_path):
    out = tmp_path / "captions.csv"
    cli_main(["caption", "--checkpoint", str(tiny_checkpoint), "--input", str(photos), "--output", str(out),
              "--limit", "5", "--batch_size", "2", "--num_workers", "0", "--progress", "false"])  # fmt: skip
    caption(str(tiny_checkpoint), str(photos), str(out), batch_size=4, **QUIET)
    text = out.read_text()
    assert text.startswith("image,caption,log_prob\n") and text.count("image,caption,log_prob") == 1
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    _same_records(rows, uninterrupted)


def test_list_file_input_and_gallery(photos, tiny_checkpoint, tmp_path):
    listing = tmp_path / "list.txt"
    names = sorted(p.name for p in photos.iterdir())[:5]
    listing.write_text("\n".join(str(photos / n) for n in names) + "\n" + str(photos / "missing.png") + "\n")
    out, page = tmp_path / "c.jsonl", tmp_path / "gallery.html"
    summary = caption(str(tiny_checkpoint), str(listing), str(out), gallery=str(page), **QUIET)
    assert summary["captioned"] == 5 and summary["failed"] == 1
    html = page.read_text()
    assert html.count('src="data:image/jpeg;base64,') == 5 and "missing.png" in html
    assert "<script" not in html and "http" not in html.split("<body>")[1]  # self-contained, nothing fetched


def test_gallery_escapes_text(photos, tmp_path):
    records = [{"image": str(photos / "00.png"), "caption": '<script>alert("x")</script> & co'}]
    page = write_gallery(records, tmp_path / "g.html", errors=[("<b>bad</b>.png", "OSError: <oops>")])
    html = page.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in html
    assert "&lt;b&gt;bad&lt;/b&gt;.png" in html and "OSError: &lt;oops&gt;" in html


def test_merging_parts_keeps_each_image_once(tmp_path):
    """What a padding sampler or a rerun could leave: the same image in two parts and in the output."""
    out = tmp_path / "c.jsonl"
    CaptionFile(out).append([{"image": "a.png", "caption": "old", "log_prob": -1.0}])
    CaptionFile(part_path(out, 0)).append([{"image": "b.png", "caption": "b", "log_prob": -1.0},
                                           {"image": "a.png", "caption": "dup", "log_prob": -1.0}])  # fmt: skip
    CaptionFile(part_path(out, 1)).append([{"image": "c.png", "caption": "c", "log_prob": -1.0},
                                           {"image": "b.png", "caption": "b", "log_prob": -1.0}])  # fmt: skip
    CaptionFile(part_path(out, 1, errors=True)).append([{"image": "d.png", "error": "OSError: x"},
                                                        {"image": "c.png", "error": "stale"}])  # fmt: skip
    errors = ErrorLog(errors_path(out))
    assert merge_parts(out, errors, CaptionFile(out).keys()) == 2
    errors.close()
    assert [(r["image"], r["caption"]) for r in _records(out)] == [("a.png", "old"), ("b.png", "b"), ("c.png", "c")]
    assert [r["image"] for r in _records(errors.path)] == ["d.png"]  # c.png was captioned after all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "c.jsonl.errors.jsonl"]  # parts gone


def test_an_output_file_of_something_else_is_refused(photos, tiny_checkpoint, tmp_path):
    other = tmp_path / "notes.jsonl"
    other.write_text('{"text": "my own notes"}\n')
    with pytest.raises(ValueError, match='line 1 of .*notes.jsonl has no "image": not an output of captioning caption'):
        caption(str(tiny_checkpoint), str(photos), str(other), **QUIET)
    assert other.read_text() == '{"text": "my own notes"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"]  # nothing written beside it


def test_resuming_with_another_strategy_or_checkpoint_is_refused(photos, tiny_checkpoint, tmp_path):
    out = tmp_path / "captions.jsonl"
    caption(str(tiny_checkpoint), str(photos), str(out), limit=3, **QUIET)
    before = out.read_bytes()
    with pytest.raises(ValueError, match="other settings .*strategy 'greedy' -> 'beam'.*choose another --output"):
        caption(str(tiny_checkpoint), str(photos), str(out), strategy="beam", **QUIET)
    retrained = tmp_path / "retrained.ckpt"
    retrained.write_bytes(tiny_checkpoint.read_bytes() + b"\0")  # another file at the same kind of path
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        caption(str(retrained), str(photos), str(out), **QUIET)
    assert out.read_bytes() == before
    assert caption(str(tiny_checkpoint), str(photos), str(out), limit=2, **QUIET)["skipped"] == 3  # the same go on
    # the checkpoint's own caption length, given explicitly, is the same setting
    assert caption(str(tiny_checkpoint), str(photos), str(out), max_length=40, limit=1, **QUIET)["skipped"] == 5
    # a CSV of the same name beside it has its own settings
    caption(str(tiny_checkpoint), str(photos), str(tmp_path / "captions.csv"), strategy="beam", limit=1, **QUIET)
    assert caption(str(tiny_checkpoint), str(photos), str(out), limit=1, **QUIET)["skipped"] == 6
    settings = out.with_name("captions.jsonl.run.json")
    settings.unlink()
    with pytest.raises(ValueError, match="holds captions but no captions.jsonl.run.json"):
        caption(str(tiny_checkpoint), str(photos), str(out), **QUIET)
    settings.write_text("{not json")
    with pytest.raises(ValueError, match="captions.jsonl.run.json is not JSON"):
        caption(str(tiny_checkpoint), str(photos), str(out), **QUIET)


def test_sampled_captions_do_not_depend_on_batching_or_resuming(photos, tiny_checkpoint, tmp_path):
    sample = {"strategy": "sample", "temperature": 1.5, "seed": 3, **QUIET}
    caption(str(tiny_checkpoint), str(photos), str(tmp_path / "one.jsonl"), batch_size=24, **sample)
    caption(str(tiny_checkpoint), str(photos), str(tmp_path / "two.jsonl"), batch_size=5, limit=7, **sample)
    caption(str(tiny_checkpoint), str(photos), str(tmp_path / "two.jsonl"), batch_size=3, **sample)
    one, two = _records(tmp_path / "one.jsonl"), _records(tmp_path / "two.jsonl")
    assert sorted((r["image"], r["caption"]) for r in two) == sorted((r["image"], r["caption"]) for r in one)
    other_seed = caption(
        str(tiny_checkpoint), str(photos), str(tmp_path / "three.jsonl"), batch_size=24, **{**sample, "seed": 4}
    )
    assert other_seed["captioned"] == 24
    assert [r["caption"] for r in _records(tmp_path / "three.jsonl")] != [r["caption"] for r in one]


def test_rerun_from_another_directory_resumes(photos, tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "captions.csv"
    monkeypatch.chdir(photos.parent)
    first = caption(str(tiny_checkpoint), photos.name, str(out), limit=10, **QUIET)  # a relative --input
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in _records(out))
    monkeypatch.chdir(tmp_path)
    second = caption(str(tiny_checkpoint), str(photos), str(out), **QUIET)
    assert (first["captioned"], second["skipped"], second["captioned"]) == (10, 10, 14)
    assert len({r["image"] for r in _records(out)}) == len(_records(out)) == 24


@pytest.mark.slow
def test_two_cpu_processes_give_the_same_captions_as_one(photos, tiny_checkpoint, uninterrupted, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(photos, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n")
    out = tmp_path / "captions.jsonl"
    command = [
        sys.executable, "-m", "captioning.cli", "caption", "--checkpoint", str(tiny_checkpoint), "--input", str(folder),
        "--output", str(out), "--devices", "2", "--accelerator", "cpu", "--batch_size", "4", "--num_workers", "1",
        "--progress", "false",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(out)
    assert len(records) == 24 == len({r["image"] for r in records})  # each image once
    one = {Path(r["image"]).name: r["caption"] for r in uninterrupted}
    assert {Path(r["image"]).name: r["caption"] for r in records} == one
    assert [Path(r["image"]).name for r in _records(tmp_path / "captions.jsonl.errors.jsonl")] == ["broken.png"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "captions.jsonl",
        "captions.jsonl.errors.jsonl",
        "captions.jsonl.run.json",
    ]
    assert "captioned 24 images" in result.stdout and "failed 1" in result.stdout
