"Training-time anomaly synthesis: masks, textures, the blend, reproducibility, the Dataset wrapper."
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cad_nb.data import DatasetError, resize_image
from cad_nb import synthesis
from cad_nb.synthesis import (TEXTURE_CHOICES, AnomalySynthesizer, SynthesisDataset, TextureSource, perlin_batch,
                              perlin_mask, perlin_masks, perlin_noise, rotate_batch, uniform)


@pytest.fixture(scope="module")
def synth():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AnomalySynthesizer()


@pytest.fixture
def one_texture(tmp_path):
    "A texture folder with a single image, so that the texture of every anomaly is known."
    texture = np.random.default_rng(3).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    (tmp_path / "images" / "striped").mkdir(parents=True)
    Image.fromarray(texture).save(tmp_path / "images" / "striped" / "striped_0001.jpg", quality=100)
    return tmp_path, texture


def test_perlin_noise_shape_range_and_seed():
    a = perlin_noise((40, 70), (4, 8), np.random.default_rng(0))
    assert a.shape == (40, 70) and a.dtype == np.float32
    assert np.abs(a).max() <= 1 + 1e-6 and a.std() > 0.05
    np.testing.assert_array_equal(a, perlin_noise((40, 70), (4, 8), np.random.default_rng(0)))
    assert not np.array_equal(a, perlin_noise((40, 70), (4, 8), np.random.default_rng(1)))
    g = torch.Generator().manual_seed(0)
    np.testing.assert_array_equal(perlin_noise((16, 16), 2, g), perlin_noise((16, 16), 2, torch.Generator().manual_seed(0)))


def test_perlin_noise_is_zero_on_the_grid_and_smooth():
    n = perlin_noise((64, 64), 8, np.random.default_rng(4))
    np.testing.assert_allclose(n[::8, ::8], 0, atol=1e-6)
    assert np.abs(np.diff(n, axis=0)).max() < 0.5 and np.abs(np.diff(n, axis=1)).max() < 0.5


def test_batch_samples_use_their_own_scale():
    angles = 2 * np.pi * uniform(np.random.default_rng(0), 2, 33, 33)
    both = perlin_batch(angles, torch.tensor([[1, 1], [32, 32]]), (64, 64))
    alone = perlin_batch(angles[1:, :33, :33], torch.tensor([[32, 32]]), (64, 64))
    torch.testing.assert_close(both[1], alone[0])
    first = perlin_batch(angles[:1, :2, :2], torch.tensor([[1, 1]]), (64, 64))  # only a 2 x 2 corner is read
    torch.testing.assert_close(both[0], first[0])


def test_rotation():
    ray = torch.zeros(1, 11, 11); ray[0, 5, 6:] = 1
    up = rotate_batch(ray, torch.tensor([90.0]))[0].round()
    assert up[:, 5].sum() >= 4 and up[5, 6:].sum() == 0                     # horizontal ray became vertical
    x = torch.rand(2, 9, 13)
    torch.testing.assert_close(rotate_batch(x, torch.tensor([0.0, 0.0])), x)


def test_masks_are_never_empty_and_repeat_from_their_seed():
    masks = perlin_masks(64, (48, 40), np.random.default_rng(0))
    assert masks.dtype == torch.bool and masks.shape == (64, 48, 40)
    assert masks.flatten(1).any(1).all()
    coverage = masks.float().mean((1, 2))
    assert 0.01 < coverage.median() < 0.5 and coverage.std() > 0.02        # varied sizes
    torch.testing.assert_close(perlin_masks(64, (48, 40), np.random.default_rng(0)), masks)
    m = perlin_mask((30, 30), np.random.default_rng(5))
    assert m.dtype == bool and m.shape == (30, 30) and m.any()
    with pytest.raises(RuntimeError, match="still empty after 2 tries"):
        perlin_masks(3, (8, 8), np.random.default_rng(0), threshold=3.0, max_tries=2)


def test_synthesizer_is_reproducible_and_leaves_the_outside_alone(synth):
    img = np.random.default_rng(1).random((64, 48, 3)).astype(np.float32)
    a, m = synth(img, np.random.default_rng(7))
    assert a.shape == img.shape and a.dtype == np.float32 and m.dtype == bool and m.any()
    np.testing.assert_array_equal(a[~m], img[~m])
    assert 0 <= a.min() and a.max() <= 1
    a2, m2 = synth(img, np.random.default_rng(7))
    np.testing.assert_array_equal(a2, a); np.testing.assert_array_equal(m2, m)
    assert not np.array_equal(synth(img, np.random.default_rng(8))[1], m)
    ab, mb = synth.batch(torch.from_numpy(img).permute(2, 0, 1)[None], np.random.default_rng(7))
    np.testing.assert_array_equal(ab[0].permute(1, 2, 0).numpy(), a)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.79])
def test_blend_formula(one_texture, beta):
    folder, texture = one_texture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synth = AnomalySynthesizer(folder, beta_range=(beta, beta))
    img = np.random.default_rng(2).random((32, 24, 3)).astype(np.float32)
    a, m = synth(img, np.random.default_rng(0))
    tex = np.asarray(resize_image(np.asarray(Image.open(next(folder.rglob("*.jpg"))).convert("RGB")), (32, 24)), np.float32) / 255
    np.testing.assert_allclose(a[m], (1 - beta) * tex[m] + beta * img[m], atol=1e-6)


def test_beta_is_drawn_in_its_range(one_texture):
    folder, _ = one_texture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opaque = AnomalySynthesizer(folder, beta_range=(0.0, 0.0))
        default = AnomalySynthesizer(folder)
    img = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    texture_only, m = opaque.batch(img, torch.Generator().manual_seed(1))
    blended, m2 = default.batch(img, torch.Generator().manual_seed(1))
    assert torch.equal(m, m2)
    inside = m.expand_as(img) > 0
    # blended = beta * img + (1 - beta) * texture inside the mask: recover each sample's beta
    num = ((blended - texture_only) * (img - texture_only) * inside).flatten(1).sum(1)
    den = ((img - texture_only) ** 2 * inside).flatten(1).sum(1)
    beta = num / den
    assert beta.min() >= -1e-4 and beta.max() < 0.8 and beta.std() > 0.1


def test_batch_on_cpu_keeps_device_dtype_and_seed(synth):
    x = torch.rand(5, 3, 20, 28)
    a, m = synth.batch(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and m.shape == (5, 1, 20, 28) and a.dtype == x.dtype and m.dtype == x.dtype
    assert set(m.unique().tolist()) <= {0.0, 1.0} and (m.flatten(1).sum(1) > 0).all()
    a2, m2 = synth.batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, a2) and torch.equal(m, m2)
    with pytest.raises(ValueError, match="B x 3 x H x W"): synth.batch(x[:, :1], torch.Generator())
    with pytest.raises(ValueError, match="H x W x 3"): synth(np.zeros((3, 8, 8), np.float32), np.random.default_rng(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_batch_on_gpu(synth):
    x = torch.rand(8, 3, 64, 64, device="cuda")
    a, m = synth.batch(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.device.type == "cuda" and m.device.type == "cuda" and (m.flatten(1).sum(1) > 0).all()
    a2, _ = synth.batch(x, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(a, a2)


def test_texture_folder_layouts_and_errors(tmp_path):
    for sub in ("images/banded", "images/dotted", "other/deeper"):
        (tmp_path / sub).mkdir(parents=True)
    for j, sub in enumerate(("images/banded", "images/dotted", "other/deeper")):
        Image.fromarray(np.full((10, 12, 3), 40 * j, np.uint8)).save(tmp_path / sub / f"t{j}.png")
    (tmp_path / "images" / "readme.txt").write_text("not an image, skipped")
    synthesis._ANNOUNCED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = TextureSource(tmp_path); TextureSource(tmp_path)
    assert len(src) == 3 and src.get(2, 5, 7).shape == (5, 7, 3)
    assert len(caught) == 1 and f"3 images from {tmp_path}" in str(caught[0].message)
    with pytest.raises(DatasetError, match="texture folder not found"): TextureSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no texture images in .*empty"): TextureSource(tmp_path / "empty")
    (tmp_path / "images" / "dotted" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match="corrupt.jpg"): TextureSource(tmp_path)


def test_embedded_textures_are_announced_once():
    synthesis._ANNOUNCED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = TextureSource(); TextureSource()
    assert len(caught) == 1 and "embedded textures" in str(caught[0].message)
    for i in range(len(src)):
        t = src.get(i, 24, 32)
        assert t.shape == (24, 32, 3) and t.dtype == np.uint8


class Images(torch.utils.data.Dataset):
    "Random images as AnomalyDataset-like dicts."
    def __len__(self): return 10
    def __getitem__(self, i): return dict(image=torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(i)), label=0, path=f"im{i}")


def test_dataset_wrapper_is_seeded_per_seed_epoch_index(synth):
    ds = SynthesisDataset(Images(), synth, seed=3)
    item = ds[4]
    assert set(item) == {"image", "label", "path", "augmented", "synth_mask"}
    assert item["augmented"].shape == (3, 24, 24) and item["synth_mask"].shape == (1, 24, 24)
    assert torch.equal(SynthesisDataset(Images(), synth, seed=3)[4]["augmented"], item["augmented"])
    assert not torch.equal(SynthesisDataset(Images(), synth, seed=4)[4]["synth_mask"], item["synth_mask"])
    ds.set_epoch(2)
    assert not torch.equal(ds[4]["synth_mask"], item["synth_mask"])
    ds.set_epoch(0)
    assert torch.equal(ds[4]["synth_mask"], item["synth_mask"])


def test_dataset_wrapper_with_workers(synth):
    ds = SynthesisDataset(Images(), synth, seed=0)
    load = lambda workers, shuffle_seed=None: {
        p: a for b in torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, shuffle=shuffle_seed is not None,
                                                  generator=None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed))
        for p, a in zip(b["path"], b["augmented"])}
    serial, parallel, shuffled = load(0), load(2), load(2, shuffle_seed=5)
    assert serial.keys() == parallel.keys() == shuffled.keys()
    assert all(torch.equal(serial[k], parallel[k]) and torch.equal(serial[k], shuffled[k]) for k in serial)


# --- release option: texture_choice ------------------------------------------------------------------

def quiet_synth(*args, **kwargs):
    "An AnomalySynthesizer without the texture-source message."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AnomalySynthesizer(*args, **kwargs)


def shown_texture(augmented, mask, k):
    "The pixels of sample `k` inside its mask (the texture itself when beta is 0)."
    return augmented[k][mask[k].expand(3, -1, -1) > 0]


def expected_texture(source, i, mask, k, h, w):
    return (torch.from_numpy(source.get(i, h, w)).permute(2, 0, 1).float() / 255)[mask[k].expand(3, -1, -1) > 0]


def test_per_image_texture_follows_the_index():
    opaque = quiet_synth(None, beta_range=(0.0, 0.0), texture_choice="per-image")
    n, x = len(opaque.textures), torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    index = [3, 3 + n, 7, 2 * n + 7]                                        # index modulo the number of textures
    for seed in range(3):                                                   # different generators, e.g. epochs
        a, m = opaque.batch(x, torch.Generator().manual_seed(seed), index)
        for k, i in enumerate(index):
            assert torch.equal(shown_texture(a, m, k), expected_texture(opaque.textures, i % n, m, k, 24, 24))
        a_np, m_np = opaque(x[0].permute(1, 2, 0).numpy(), np.random.default_rng(seed), index=5)
        tex = opaque.textures.get(5, 24, 24).astype(np.float32) / 255
        np.testing.assert_array_equal(a_np[m_np], tex[m_np])
    assert not np.array_equal(opaque.textures.get(3, 24, 24), opaque.textures.get(7, 24, 24))   # indices differ


def test_texture_choice_changes_only_the_texture():
    rand, per_image = quiet_synth(), quiet_synth(texture_choice="per-image")
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for seed in range(3):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        _, m1 = rand.batch(x, g1)
        _, m2 = per_image.batch(x, g2, list(range(6)))
        assert torch.equal(m1, m2)
        assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))   # the same draws were consumed


def test_texture_choice_keeps_betas(one_texture):
    folder, _ = one_texture                                    # one texture: both modes must give the same output
    rand, per_image = quiet_synth(folder), quiet_synth(folder, texture_choice="per-image")
    x = torch.rand(5, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    a1, m1 = rand.batch(x, np.random.default_rng(4))
    a2, m2 = per_image.batch(x, np.random.default_rng(4), [9, 1, 0, 4, 2])
    assert torch.equal(m1, m2) and torch.equal(a1, a2)


def test_per_image_reads_the_sorted_texture_list(tmp_path):
    names = ["zigzagged/zigzagged_0001.jpg", "banded/banded_0002.jpg", "polka-dotted/polka-dotted_0001.jpg",
             "banded/banded_0001.jpg", "pleated/pleated_0003.jpg"]
    for j, name in enumerate(names):                           # written out of order, each a flat colour
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 40 * j + 10, np.uint8)).save(tmp_path / "images" / name, quality=100)
    opaque = quiet_synth(tmp_path, beta_range=(0.0, 0.0), texture_choice="per-image")
    ordered = sorted("images/" + n for n in names)
    assert opaque.textures.names == ordered
    x = torch.zeros(len(names), 3, 8, 8)
    a, m = opaque.batch(x, torch.Generator().manual_seed(0), list(range(len(names))))
    for k, name in enumerate(ordered):
        colour = np.asarray(Image.open(tmp_path / name).convert("RGB"), np.float32)[0, 0] / 255
        assert torch.allclose(shown_texture(a, m, k).view(3, -1), torch.from_numpy(colour)[:, None])


def test_dataset_wrapper_passes_the_index():
    opaque = quiet_synth(None, beta_range=(0.0, 0.0), texture_choice="per-image")
    ds = SynthesisDataset(Images(), opaque, seed=0)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in (0, 4, 9):
            item = ds[i]
            a, m = item["augmented"][None], item["synth_mask"][None]
            assert torch.equal(shown_texture(a, m, 0), expected_texture(opaque.textures, i % len(opaque.textures), m, 0, 24, 24))


def test_texture_choice_errors():
    assert TEXTURE_CHOICES == ("random", "per-image")
    with pytest.raises(ValueError, match="unknown texture_choice 'sorted'"): quiet_synth(texture_choice="sorted")
    per_image, x = quiet_synth(texture_choice="per-image"), torch.rand(3, 3, 16, 16)
    with pytest.raises(ValueError, match="texture_choice='per-image' needs index"): per_image.batch(x, torch.Generator())
    with pytest.raises(ValueError, match="needs index, 3 ints"): per_image.batch(x, torch.Generator(), [0, 1])
    with pytest.raises(ValueError, match="needs index"): per_image(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))
    a, _ = quiet_synth().batch(x, torch.Generator().manual_seed(0), index=[0, 1, 2])   # random ignores the index
    assert torch.equal(a, quiet_synth().batch(x, torch.Generator().manual_seed(0))[0])
