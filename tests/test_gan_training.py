"""Progressive-growing pieces of training/gan.py: what ships is exactly the ProGAN generator."""
import pytest
import torch

from core.generators.progan import from_state_dict
from training.gan import Discriminator, GrowingGenerator, main, parse_schedule, stage_at

SIZES = [16, 16, 8, 8]  # z, then 4, 8, 16 px


def test_final_resolution_is_the_shipped_generator():
    torch.manual_seed(0)
    grow = GrowingGenerator(SIZES)
    z = torch.randn(3, 16)
    shipped = from_state_dict(grow.g.state_dict())
    assert torch.allclose(grow(z), shipped(z), atol=1e-6)
    assert torch.allclose(grow(z, 16, alpha=1.0), shipped(z), atol=1e-6)


def test_each_stage_draws_its_resolution_and_fades_from_the_previous():
    torch.manual_seed(0)
    grow, disc = GrowingGenerator(SIZES), Discriminator(16, channels=(8, 8, 8))
    z = torch.randn(4, 16)
    for res in (4, 8, 16):
        x = grow(z, res, alpha=0.5)
        assert x.shape == (4, 3, res, res)
        assert disc(x, alpha=0.5).shape == (4, 1)
    # alpha = 0: the new stage shows exactly the upsampled previous one
    low = torch.nn.functional.interpolate(grow(z, 8), scale_factor=2, mode="nearest")
    assert torch.allclose(grow(z, 16, alpha=0.0), low, atol=1e-6)


def test_schedule():
    stages = parse_schedule("8:10,16:20,64:0:16", batch=32)
    assert stages == [(8, 10, 32), (16, 20, 32), (64, 0, 16)]
    assert stage_at(stages, 0, fade=5) == (8, 1.0, 32)
    assert stage_at(stages, 10, fade=5) == (16, 0.2, 32)
    assert stage_at(stages, 14, fade=5) == (16, 1.0, 32)
    assert stage_at(stages, 10 ** 6, fade=5) == (64, 1.0, 16)
    with pytest.raises(ValueError, match="res:steps"):
        parse_schedule("8", batch=32)


def _small_data(monkeypatch, n: int):
    """Train on ``n`` 16-px Toytown scenes with a tiny generator (z of the renderer's 128)."""
    import training.gan as gan
    from training.toytown import latents, render_latents

    z = latents(0, n)
    images, labels = render_latents(z, size=16)
    data = gan.Data(torch.from_numpy(z), torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels))
    monkeypatch.setattr(gan, "load_dataset", lambda n, seed, size, workers: data)
    monkeypatch.setattr(gan, "DEFAULT_SIZES", [128, 16, 8, 8])


def test_a_few_steps_train_resume_and_export(tmp_path, monkeypatch):
    _small_data(monkeypatch, 16)
    run = tmp_path / "run"
    args = ["--run-dir", str(run), "--resolution", "16", "--schedule", "4:2,8:2,16:0:4", "--fade", "2",
            "--batch", "8", "--steps", "7", "--sample-every", "5", "--r1-every", "2", "--fresh"]
    main(args)
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 7
    main(args[:-1] + ["--steps", "9", "--r1-gamma", "0.5"])  # resumes from state.pt, new R1 weight
    st = torch.load(run / "state.pt", weights_only=True)
    assert st["step"] == 9 and st["images"] == 4 * 8 + 5 * 4  # the last stage has its own batch
    assert [(r["from_step"], r["r1_gamma"]) for r in st["recipe"]] == [(0, 1.0), (7, 0.5)]
    from safetensors.torch import load_file
    g = from_state_dict(load_file(run / "generator_ema.safetensors"))
    assert g.resolution == 16 and torch.isfinite(g(torch.randn(2, 128))).all()
    assert (run / "samples_000005.png").exists() and (run / "raw_000005.png").exists()
    # the committed compact checkpoint resumes as well, recipe included
    compact = tmp_path / "resume.safetensors"
    main(["--run-dir", str(run), "--export-resume", "--resume-from", str(compact)])
    run2 = tmp_path / "run2"
    main(["--run-dir", str(run2)] + args[2:-1] + ["--steps", "10", "--resume-from", str(compact)])
    st2 = torch.load(run2 / "state.pt", weights_only=True)
    assert st2["step"] == 10 and st2["images"] == st["images"] + 4 and st2["recipe"][0]["from_step"] == 0


def test_dataset_rendered_by_several_workers_is_the_same(tmp_path):
    from training.gan import load_dataset
    one = load_dataset(10, seed=3, size=64, cache_dir=tmp_path / "a")
    two = load_dataset(10, seed=3, size=64, cache_dir=tmp_path / "b", workers=3)
    assert one.images.shape == (10, 3, 64, 64) and one.images.dtype == torch.uint8
    assert one.z.shape == (10, 128) and one.labels.shape == (10, 64, 64)
    for a, b, c in zip(one, two, load_dataset(10, seed=3, size=64, cache_dir=tmp_path / "b")):  # c: cached
        assert torch.equal(a, b) and torch.equal(b, c)


def test_device_plan_gives_each_resolution_its_share():
    from training.device_gan import SHARES, plan
    schedule, fade = plan({8: 0.01, 16: 0.01, 32: 0.02, 64: 0.04}, minutes=10)
    stages = parse_schedule(schedule, batch=64)
    assert [r for r, _, _ in stages] == [8, 16, 32, 64] and stages[-1][1] == 0
    assert [n for _, n, _ in stages[:3]] == [int(600 * SHARES[0] / 0.01), int(600 * SHARES[1] / 0.01),
                                             int(600 * SHARES[2] / 0.02)]
    assert fade == min(n for _, n, _ in stages[1:3]) // 2


def test_device_run_files_merge_into_a_resumable_state(tmp_path, monkeypatch):
    import training.gan as gan
    from training.device_gan import merge, write_parts

    _small_data(monkeypatch, 16)
    args = ["--resolution", "16", "--schedule", "4:2,16:0:4", "--fade", "2", "--batch", "8", "--fresh"]
    gan.main(["--run-dir", str(tmp_path / "device")] + args + ["--steps", "3"])
    files = tmp_path / "out"
    files.mkdir()
    write_parts(tmp_path / "device", files)
    home = tmp_path / "home"
    merge(files, home, tmp_path / "compact.safetensors")
    st = torch.load(home / "state.pt", weights_only=True)
    assert st["step"] == 3 and "opt_g" not in st and (tmp_path / "compact.safetensors").exists()
    from safetensors.torch import load_file
    assert from_state_dict(load_file(home / "generator_ema.safetensors")).resolution == 16
    gan.main(["--run-dir", str(home)] + args[:-1] + ["--steps", "5"])   # Adam restarts, training goes on
    assert torch.load(home / "state.pt", weights_only=True)["step"] == 5


ADVERSARIAL = ["--l1-weight", "0", "--regress-steps", "0"]


@pytest.mark.parametrize("recipe", [["--loss", "relativistic", "--r2-gamma", "0.1"] + ADVERSARIAL,
                                    ["--seg-weight", "1"] + ADVERSARIAL, ["--l1-weight", "10", "--regress-steps", "3"]])
def test_each_bakeoff_recipe_trains(tmp_path, monkeypatch, recipe):
    _small_data(monkeypatch, 8)
    run = tmp_path / "run"
    main(["--run-dir", str(run), "--resolution", "16", "--schedule", "8:2,16:0:4", "--fade", "2", "--batch", "8",
          "--steps", "6", "--r1-every", "2", "--fresh"] + recipe)
    st = torch.load(run / "state.pt", weights_only=True)
    assert st["step"] == 6 and all(torch.isfinite(v).all() for v in st["G"].values())
    setting = st["recipe"][0][recipe[0][2:].replace("-", "_")]
    assert setting == type(setting)(recipe[1])


def test_discriminator_segments_at_16_px():
    disc = Discriminator(64, channels=(8, 8, 8, 8, 8), seg_classes=11)
    out, seg = disc(torch.randn(2, 3, 64, 64), segment=True)
    assert out.shape == (2, 1) and seg.shape == (2, 11, 16, 16)
    assert disc(torch.randn(2, 3, 8, 8), segment=True)[1] is None
    assert Discriminator(64, channels=(8, 8, 8, 8, 8))(torch.randn(2, 3, 16, 16), segment=True)[1] is None
