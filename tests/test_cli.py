"""The CLI (python -m core ...) and core.images: grids, bytes, image-number parsing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import __main__ as cli
from core.images import make_grid, outline, parse_image_numbers, save_grid, to_pil, to_uint8

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=REPO):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- subprocess
def test_cli_convert_then_sample(tmp_path, tiny_progan):
    src = tmp_path / "g.pth"
    torch.save({"state_dict": tiny_progan.state_dict()}, src)
    r = run_cli("convert", src, tmp_path / "bundle", "--name", "tiny")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    cfg = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert cfg["name"] == "tiny" and cfg["source"]["file"] == "g.pth"

    out = tmp_path / "grids" / "grid.png"
    r = run_cli("sample", tmp_path / "bundle", "--images", "0-5,9", "--out", out, "--nrow", "4",
                "--noise", "zero", "--truncation", "0.7")
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        w, h = im.size
    assert w == 2 + 4 * (16 + 2) and h > 2 * (16 + 2)      # 4 per row, 2 rows (+ captions)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    r = run_cli("sample", tmp_path / "missing", "--out", tmp_path / "x.png")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- in-process
def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "convert" in out and "sample" in out
    assert "core.cli.sample" in cli.command_modules()


@pytest.mark.parametrize("argv, needle", [
    (["sample", "{bundle}", "--images", "5-2"], "goes backwards"),
    (["sample", "{bundle}", "--images", "0-20000"], "more than 10,000"),
    (["sample", "{bundle}", "--noise", "loud"], "--noise"),
    (["sample", "{bundle}", "--out", "{tmp}/grid.jpg"], ".png"),
    (["sample", "{tmp}/absent"], "no such bundle folder"),
    (["convert", "{tmp}/absent.pth", "{tmp}/out"], "no such checkpoint"),
    (["convert", "{tmp}/g.pth", "{bundle}"], "already holds a bundle"),
    (["convert", "{tmp}/evil.pth", "{tmp}/out"], "refusing to load"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, progan_bundle, tiny_progan, capsys, argv, needle):
    torch.save(tiny_progan.state_dict(), tmp_path / "g.pth")
    torch.save({"x": Path("/")}, tmp_path / "evil.pth")       # a pickled object, not tensors
    argv = [a.format(bundle=progan_bundle, tmp=tmp_path) for a in argv]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "out").exists()


def test_cli_sample_legacy_checkpoint(tmp_path, tiny_progan, capsys):
    src = tmp_path / "g.pth"
    torch.save(tiny_progan.state_dict(), src)
    out = tmp_path / "g.png"
    assert cli.main(["sample", str(src), "--images", "3", "--out", str(out), "--no-captions"]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size == (20, 20)
        arr = np.asarray(im)
    assert (arr[2:18, 2:18] == to_uint8(tiny_progan.generate(tiny_progan.sample_z([3]))[0])).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "g.pth"]   # no bundle written


def test_cli_convert_overwrite(tmp_path, progan_bundle, tiny_progan, capsys):
    torch.save(tiny_progan.state_dict(), tmp_path / "g.pth")
    assert cli.main(["convert", str(tmp_path / "g.pth"), str(progan_bundle), "--overwrite"]) == 0
    assert "sha256" in capsys.readouterr().out


# ----------------------------------------------------------------------------- images
def test_to_uint8_and_to_pil():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0]).view(1, 5).expand(3, 1, 5).clone()
    u = to_uint8(x)
    assert u.dtype == np.uint8 and u.shape == (1, 5, 3)
    assert u[0, :, 0].tolist() == [0, 127, 255, 255, 0]
    assert to_uint8(x[None]).shape == (1, 1, 5, 3)
    im = to_pil(x)
    assert im.size == (5, 1) and im.mode == "RGB"
    assert to_pil(x[None]).size == (5, 1)
    with pytest.raises(ValueError, match="one image"):
        to_pil(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        to_uint8(torch.zeros(4, 4))


def test_outline_scales_the_mask_and_draws_only_its_border():
    img = np.full((8, 8, 3), 10, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True                                    # a 2x2 block -> 4x4 at the tile's size
    out = outline(Image.fromarray(img), mask, (255, 0, 255))
    drawn = (out == (255, 0, 255)).all(-1)
    ring = np.zeros((8, 8), bool)
    ring[2:6, 2:6] = True
    ring[3:5, 3:5] = False
    assert (drawn == ring).all() and (out[~ring] == 10).all()
    assert (img == 10).all()                                 # the input is not changed
    assert (outline(img, np.ones((8, 8), bool)) == 10).all()  # the image edge is no border


def test_save_grid(tmp_path):
    imgs = torch.linspace(-1, 1, 5 * 3 * 8 * 8).view(5, 3, 8, 8)
    p = save_grid(imgs, tmp_path / "g.png", nrow=2)
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size == (2 + 2 * 10, 2 + 3 * 10)
        arr = np.asarray(im)
    assert (arr[2:10, 2:10] == to_uint8(imgs[0])).all()           # lossless, first tile in place
    assert (arr[2:10, 12:20] == to_uint8(imgs[1])).all()
    cap = make_grid(imgs, nrow=5, captions=[str(i) for i in range(5)])
    assert cap.size[0] == 2 + 5 * 10 and cap.size[1] > 12
    assert make_grid([to_pil(imgs[0]), to_uint8(imgs[1])], nrow=2).size == (22, 12)
    with pytest.raises(ValueError, match="captions"):
        make_grid(imgs, captions=["a"])
    with pytest.raises(ValueError, match="PNG"):
        save_grid(imgs, tmp_path / "g.jpg")
    with pytest.raises(ValueError, match="no images"):
        make_grid([])


@pytest.mark.parametrize("spec, expected", [
    ("0-15,20,30-32", list(range(16)) + [20, 30, 31, 32]),
    (" 3 , 1 ,2 ", [3, 1, 2]),
    ("7", [7]),
    ("4-4", [4]),
    ("2 - 4", [2, 3, 4]),
    ("0-3,2,1,5", [0, 1, 2, 3, 5]),          # repeats dropped, order kept
    ("9999999", [9999999]),
    (5, [5]),
    ([4, 2, 4], [4, 2]),
    (range(3), [0, 1, 2]),
    ("0-9999", list(range(10000))),
])
def test_parse_image_numbers(spec, expected):
    assert parse_image_numbers(spec) == expected


@pytest.mark.parametrize("spec, needle", [
    ("", "no image numbers"),
    ("   ", "no image numbers"),
    ([], "no image numbers"),
    ("1,,2", "empty item"),
    ("1,", "empty item"),
    ("-3", ">= 0"),
    (-1, ">= 0"),
    ("5-2", "goes backwards"),
    ("a", "'a' is not an image number"),
    ("1.5", "'1.5'"),
    ("1-2-3", "'1-2-3'"),
    ("0-10000", "more than 10,000"),
    ("0-5000,5000-9999", "more than 10,000"),
    ("0-99999999999999999999", "too large"),
    ("10000000", "too large"),
    ("9" * 5000, "too large"),             # not Python's "Exceeds the limit (4300 digits)"
    ("1-" + "9" * 5000, "too large"),
    ([1, "2"], "integers"),
    ([True], "integers"),
])
def test_parse_image_numbers_errors(spec, needle):
    with pytest.raises(ValueError) as e:
        parse_image_numbers(spec)
    assert needle in str(e.value)


def test_parse_image_numbers_limit_is_a_parameter():
    assert len(parse_image_numbers("0-19999", max_count=20000)) == 20000
    with pytest.raises(ValueError, match="more than 3"):
        parse_image_numbers("0-3", max_count=3)
