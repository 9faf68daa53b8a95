"""monai_shf.data: embedded datasets, datalists and their checks."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from monai_shf.data import (
    check_datalist,
    ensure_synthetic_2d,
    ensure_synthetic_3d,
    image_header,
    load_datalist,
    make_datalist,
    synthetic_organs_3d,
    synthetic_tissue_2d,
)


def test_synthetic_generators():
    image, label = synthetic_tissue_2d(256, seed=1)
    assert image.shape == (3, 256, 256) and image.dtype == np.uint8 and label.shape == (1, 256, 256)
    assert 0.1 < (label > 0).mean() < 0.9
    vol, lab = synthetic_organs_3d((32, 32, 24), seed=1)
    assert vol.shape == lab.shape == (32, 32, 24) and set(np.unique(lab)) == {0, 1, 2}
    assert vol[lab == 2].mean() > vol[lab == 1].mean() > vol[lab == 0].mean()


def test_embedded_datasets_are_written_once(tmp_path):
    first = ensure_synthetic_2d(tmp_path / "d2", num_train=2, num_val=1, size=64)
    assert len(first["training"]) == 2 and len(first["validation"]) == 1
    stamp = (tmp_path / "d2" / "images" / "tissue_000.png").stat().st_mtime_ns
    assert ensure_synthetic_2d(tmp_path / "d2", num_train=2, num_val=1, size=64) == first
    assert (tmp_path / "d2" / "images" / "tissue_000.png").stat().st_mtime_ns == stamp
    assert load_datalist(tmp_path / "d2" / "datalist.json") == first
    check_datalist(first["training"], image_channels=3)
    d3 = ensure_synthetic_3d(tmp_path / "d3", num_train=1, num_val=1, size=(16, 16, 8))
    img = nib.load(d3["training"][0]["image"])
    assert img.shape == (16, 16, 8) and np.allclose(np.diag(img.affine)[:3], (1.5, 1.5, 2.5))
    assert image_header(d3["training"][0]["label"]) == ((16, 16, 8), 1)


def _nifti(path, shape=(8, 8, 4)):
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def test_make_datalist_msd_layouts(tmp_path):
    btcv = tmp_path / "btcv"
    (btcv / "imagesTr").mkdir(parents=True)
    (btcv / "labelsTr").mkdir()
    for i in (1, 2, 3, 4, 5):
        _nifti(btcv / "imagesTr" / f"img{i:04d}.nii.gz")
        _nifti(btcv / "labelsTr" / f"label{i:04d}.nii.gz")
    made = make_datalist(btcv, "msd", output=btcv / "datalist.json", val_fraction=0.2)
    assert len(made["training"]) == 4 and len(made["validation"]) == 1
    pairs = made["training"] + made["validation"]
    assert all(p["image"].replace("imagesTr/img", "") == p["label"].replace("labelsTr/label", "") for p in pairs)
    loaded = load_datalist(btcv / "datalist.json")
    check_datalist(loaded["training"], image_channels=1)
    kits = tmp_path / "kits"
    (kits / "imagesTr").mkdir(parents=True)
    (kits / "labelsTr").mkdir()
    _nifti(kits / "imagesTr" / "case_00007_0000.nii.gz")
    _nifti(kits / "labelsTr" / "case_00007.nii.gz")
    assert make_datalist(kits, "msd", val_fraction=0)["training"] == [
        {"image": "imagesTr/case_00007_0000.nii.gz", "label": "labelsTr/case_00007.nii.gz"}
    ]


def test_make_datalist_paired_layout(tmp_path):
    from PIL import Image

    for name in ("01_01_0083", "01_01_0085"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{name}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"{name}_mask.png")
    made = make_datalist(tmp_path, "paired", val_fraction=0.5)
    assert len(made["training"]) == 1 and len(made["validation"]) == 1
    assert made["training"][0]["label"] == made["training"][0]["image"].replace(".png", "_mask.png")
    (tmp_path / "orphan.png").write_bytes((tmp_path / "01_01_0083.png").read_bytes())
    with pytest.raises(ValueError, match="orphan"):
        make_datalist(tmp_path, "paired")


def test_bad_datalists(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_datalist(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_datalist(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text(json.dumps({"validation": []}))
    with pytest.raises(ValueError, match="training"):
        load_datalist(tmp_path / "empty.json")
    with pytest.raises(ValueError, match="no items"):
        check_datalist([])
    image = _nifti(tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="b.nii.gz"):
        check_datalist([{"image": str(image), "label": str(tmp_path / "b.nii.gz")}])
    label = _nifti(tmp_path / "c.nii.gz", shape=(8, 8, 5))
    with pytest.raises(ValueError, match="spatial shape"):
        check_datalist([{"image": str(image), "label": str(label)}])
    truncated = tmp_path / "t.nii.gz"
    truncated.write_bytes(image.read_bytes()[:60])
    with pytest.raises(ValueError, match="cannot read image"):
        check_datalist([{"image": str(truncated)}])
    with pytest.raises(ValueError, match="channel"):
        check_datalist([{"image": str(image)}], image_channels=3)
    with pytest.raises(ValueError, match="layout"):
        make_datalist(tmp_path, "nnunet")


def test_msd_dataset_json_metadata_and_test_lists(tmp_path):
    image = _nifti(tmp_path / "imagesTr" / "a.nii.gz") if (tmp_path / "imagesTr").mkdir() is None else None
    msd = {
        "name": "Task",
        "numTraining": 1,
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./imagesTr/a.nii.gz"}],
        "test": ["./imagesTr/a.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(msd))
    loaded = load_datalist(tmp_path / "dataset.json")
    assert loaded["name"] == "Task" and loaded["numTraining"] == 1
    assert loaded["test"] == [str(image.resolve())] and loaded["training"][0]["image"] == str(image.resolve())


def test_header_details(tmp_path):
    five = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 1, 2), np.float32), np.eye(4)), str(five))
    assert image_header(five) == ((4, 4, 3), 2)
    raw = _nifti(tmp_path / "raw.nii", shape=(16, 16, 8))
    raw.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(ValueError, match="raw.nii"):
        image_header(raw)
    with pytest.raises(ValueError, match="no 'label'"):
        check_datalist([{"image": str(five)}], require_label=True)


def test_embedded_data_follows_its_parameters_and_permissions(tmp_path):
    import os

    from PIL import Image

    first = ensure_synthetic_2d(tmp_path, num_train=1, num_val=1, size=32)
    assert Image.open(first["training"][0]["image"]).size == (32, 32)
    again = ensure_synthetic_2d(tmp_path, num_train=1, num_val=1, size=48)
    assert Image.open(again["training"][0]["image"]).size == (48, 48), "files of another size were reused"
    mode = os.stat(again["training"][0]["image"]).st_mode & 0o777
    assert mode & 0o044, "generated files must be readable by others (not mkstemp's 0600)"
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_tissue_2d(32, num_classes=5)


def test_headers_only_no_pixel_is_decoded(tmp_path, monkeypatch):
    """check_datalist reads headers: a PNG or .nii.gz whose body is cut off still passes (it fails when
    loaded), and neither Pillow's decoder nor nibabel's data reader is ever called."""
    import PIL.Image
    import tifffile
    from PIL import Image

    png = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(png)
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    gz = _nifti(tmp_path / "vol.nii.gz", shape=(32, 32, 16))
    cut_gz = tmp_path / "cut.nii.gz"
    cut_gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    tif = tmp_path / "slide.tif"
    tifffile.imwrite(tif, np.zeros((64, 48, 3), np.uint8), tile=(16, 16))

    def no_decode(*args, **kwargs):
        raise AssertionError("pixels decoded by a header check")

    monkeypatch.setattr(PIL.Image.Image, "load", no_decode)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__getitem__", no_decode)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_decode)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", no_decode)
    assert image_header(cut_png) == ((300, 200), 3)
    assert image_header(cut_gz) == ((32, 32, 16), 1)
    assert image_header(tif) == ((64, 48), 3)
    check_datalist([{"image": str(cut_png), "label": str(cut_png)}], label_key=None, image_channels=3)
    monkeypatch.undo()
    with pytest.raises(OSError):
        with Image.open(cut_png) as im:
            im.load()  # the body really is cut: only a full decode finds out


def test_make_datalist_dicom_layout_one_item_per_series(ct_volume, tmp_path, capsys, write_series):
    from monai_shf.cli import main

    small = ct_volume[:16, :12, :6]
    write_series(small, tmp_path / "patient1" / "ct")
    second = write_series(small[:, :, :4], tmp_path / "patient2" / "ct")
    write_series(small, tmp_path / "patient2" / "seg", Modality="SEG")  # a non-image object: skipped
    assert main(["datalist", str(tmp_path), "--layout", "dicom"]) == 0
    assert "2 testing cases" in capsys.readouterr().out
    made = load_datalist(tmp_path / "datalist.json")
    assert made["training"] == [] and made["validation"] == []
    assert [item["image"] for item in made["testing"]] == [
        str(tmp_path / "patient1" / "ct"),
        str(tmp_path / "patient2" / "ct"),
    ]
    # the series' headers give the shape the ITK reader returns (columns, rows, slices)
    assert image_header(made["testing"][1]["image"]) == ((16, 12, 4), 1)
    check_datalist(made["testing"], label_key=None, image_channels=1)
    # a broken series anywhere under the root names its folder
    second[1].unlink()
    with pytest.raises(ValueError, match=r"patient2/ct has missing slices"):
        make_datalist(tmp_path, "dicom")


def _png(path, shape=(8, 8)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    return path


def test_msd_pairs_by_the_whole_case_name(tmp_path):
    for name in ("p1_s1", "p2_s1"):
        _png(tmp_path / "imagesTr" / f"{name}.png")
        _png(tmp_path / "labelsTr" / f"{name}_seg.png")
    made = make_datalist(tmp_path, "msd", val_fraction=0)["training"]
    assert made == [
        {"image": "imagesTr/p1_s1.png", "label": "labelsTr/p1_s1_seg.png"},
        {"image": "imagesTr/p2_s1.png", "label": "labelsTr/p2_s1_seg.png"},
    ]
    (tmp_path / "labelsTr" / "p2_s1_seg.png").unlink()  # p2_s1 has no label now: never p1_s1's
    with pytest.raises(ValueError, match="no label .* for image .*p2_s1.png"):
        make_datalist(tmp_path, "msd")


def test_msd_ambiguous_and_duplicate_pairings_list_the_files(tmp_path):
    _png(tmp_path / "imagesTr" / "a.png")
    _png(tmp_path / "labelsTr" / "a_seg.png")
    _png(tmp_path / "labelsTr" / "a_mask.png")
    with pytest.raises(ValueError, match="ambiguous labels for image .*a.png.*a_mask.png, .*a_seg.png"):
        make_datalist(tmp_path, "msd")
    (tmp_path / "labelsTr" / "a_mask.png").unlink()
    _png(tmp_path / "imagesTr" / "a.tif")  # a second image of case "a"
    with pytest.raises(ValueError, match="images .*a.png, .*a.tif are one case 'a'"):
        make_datalist(tmp_path, "msd")


def test_msd_modalities_form_one_item_and_load_as_absolute_lists(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for m in range(3):
        _nifti(tmp_path / "imagesTr" / f"BRATS_001_{m:04d}.nii.gz")
    _nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    made = make_datalist(tmp_path, "msd", output=tmp_path / "datalist.json", val_fraction=0)
    assert made["training"] == [
        {"image": [f"imagesTr/BRATS_001_{m:04d}.nii.gz" for m in range(3)], "label": "labelsTr/BRATS_001.nii.gz"}
    ]
    loaded = load_datalist(tmp_path / "datalist.json")["training"]
    assert loaded[0]["image"] == [str((tmp_path / f"imagesTr/BRATS_001_{m:04d}.nii.gz").resolve()) for m in range(3)]
    check_datalist(loaded, image_channels=3)  # three one-channel files: three channels


def test_paired_layout_pairs_by_the_whole_stem(tmp_path):
    for name in ("case.v1", "case.v2"):
        _png(tmp_path / f"{name}.png")
    _png(tmp_path / "case_mask.png")
    with pytest.raises(ValueError, match=r"no mask 'case.v1_mask.\*' beside image .*case.v1.png"):
        make_datalist(tmp_path, "paired")
    for name in ("case.v1", "case.v2"):
        _png(tmp_path / f"{name}_mask.png")
    (tmp_path / "case_mask.png").unlink()
    made = make_datalist(tmp_path, "paired", output=tmp_path / "datalist.json", val_fraction=0)["training"]
    assert made == [
        {"image": "case.v1.png", "label": "case.v1_mask.png"},
        {"image": "case.v2.png", "label": "case.v2_mask.png"},
    ]
    assert make_datalist(tmp_path, "paired", val_fraction=0)["training"] == made  # its own JSON is not an image
    _png(tmp_path / "case.v1_mask.tif")
    with pytest.raises(ValueError, match="ambiguous masks for image .*case.v1.png"):
        make_datalist(tmp_path, "paired")


def test_interrupted_regeneration_is_redone(tmp_path, monkeypatch):
    """The parameter stamp is written after the files: a regeneration that dies half-way leaves no
    stamp, and the next run regenerates the stale files instead of trusting them."""
    from monai_shf.data import datalist as datalist_module

    root = tmp_path / "d2"
    ensure_synthetic_2d(root, num_train=2, num_val=1, size=32, seed=0)
    real = datalist_module.synthetic_tissue_2d
    calls = []

    def dies_on_the_second_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(datalist_module, "synthetic_tissue_2d", dies_on_the_second_case)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_2d(root, num_train=2, num_val=1, size=32, seed=5)
    monkeypatch.setattr(datalist_module, "synthetic_tissue_2d", real)
    ensure_synthetic_2d(root, num_train=2, num_val=1, size=32, seed=5)
    ensure_synthetic_2d(tmp_path / "clean", num_train=2, num_val=1, size=32, seed=5)
    for i in range(3):
        name = f"images/tissue_{i:03d}.png"
        assert (root / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name


def test_datalist_items_that_are_not_paths_name_their_index(tmp_path):
    image = _nifti(tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match="datalist item 1 'image' must be a file path or a non-empty list"):
        check_datalist([{"image": str(image)}, {"image": 3}])
    with pytest.raises(ValueError, match="datalist item 0 must be an object"):
        check_datalist([str(image)])
    with pytest.raises(ValueError, match="item 0 'label' must be a file path"):
        check_datalist([{"image": str(image), "label": {"file": "x"}}])
    (tmp_path / "bad.json").write_text(json.dumps({"training": [{"image": "a.nii.gz"}, 7]}))
    with pytest.raises(ValueError, match="'training' item 1 must be an object"):
        load_datalist(tmp_path / "bad.json")
    (tmp_path / "multi.json").write_text(json.dumps({"training": [{"image": ["a.nii.gz", "./a.nii.gz"]}]}))
    assert load_datalist(tmp_path / "multi.json")["training"][0]["image"] == [str(image.resolve())] * 2
