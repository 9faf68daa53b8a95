"""SaveDicomSegd: DICOM SEG on the source series, mapped by geometry; the 3D bundle on a DICOM series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from monai.transforms import LoadImage, Orientation

from monai_shf.bundles import bundle_path
from monai_shf.data.dicom_series import read_series
from monai_shf.transforms import SaveDicomSegd
from monai_shf.transforms.dicom import series_frames

BUNDLE = bundle_path("shf_3d_segmentation")
TINY_3D = {
    "forest#length": 64,
    "network_def#hidden_size": 32,
    "network_def#mlp_dim": 64,
    "network_def#num_layers": 1,
    "network_def#num_heads": 4,
}


def _load(folder: Path) -> MetaTensor:
    return LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(str(folder))


def _source(folder: Path) -> dict[str, pydicom.Dataset]:
    """SOPInstanceUID -> dataset (with pixels) of every file of the series."""
    return {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in read_series(folder).files)}


def _seg_on_grid(seg: hd.seg.Segmentation, affine: np.ndarray) -> np.ndarray:
    """The SEG's volume (highdicom's own geometry: (slices, rows, cols) in LPS) reoriented onto the
    voxel axes of the RAS ``affine``, independently of SaveDicomSegd's mapping."""
    vol = seg.get_volume(combine_segments=seg.SegmentationType == "BINARY")
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    t = nib.orientations.ornt_transform(nib.orientations.io_orientation(ras), nib.orientations.io_orientation(affine))
    array = nib.orientations.apply_orientation(vol.array, t)
    moved = ras @ nib.orientations.inv_ornt_aff(t, vol.array.shape[:3])
    np.testing.assert_allclose(moved, affine, atol=1e-4)
    return array


def _check_references(path: Path, folder: Path) -> pydicom.Dataset:
    """The SEG file references the series: study, frame of reference, every source SOP instance, and
    every frame lies on one source slice."""
    source = _source(folder)
    first = next(iter(source.values()))
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == first.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(source)
    positions = {tuple(np.round(np.asarray(s.ImagePositionPatient, float), 3)) for s in source.values()}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        ipp = tuple(np.round(np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float), 3))
        assert ipp in positions
        (derivation,) = frame.DerivationImageSequence
        (src,) = derivation.SourceImageSequence
        assert src.ReferencedSOPInstanceUID in source
        assert tuple(np.round(np.asarray(source[src.ReferencedSOPInstanceUID].ImagePositionPatient, float), 3)) == ipp
    return ds


@pytest.mark.parametrize("axcodes", [None, "LPS", "SRA"])
def test_series_frames_match_the_source_pixels_on_any_axis_order(ct_series, axcodes):
    image = _load(ct_series)
    if axcodes:
        image = Orientation(axcodes=axcodes)(image)
    source = _source(ct_series)
    frames = series_frames(image.numpy(), image.affine.numpy(), list(source.values()))
    for frame, ds in zip(frames, source.values()):
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(frame[..., 0], hu)


def test_series_frames_refuse_another_grid(ct_series):
    image = _load(ct_series)
    affine = image.affine.numpy().copy()
    affine[:3, :3] *= 1.5
    with pytest.raises(ValueError, match="not on the prediction's voxel grid"):
        series_frames(image.numpy(), affine, list(_source(ct_series).values()))


def _prediction(image: MetaTensor) -> MetaTensor:
    labels = torch.zeros_like(image, dtype=torch.uint8)
    labels[image > 40] = 1
    labels[image > 75] = 2
    return MetaTensor(labels, meta=dict(image.meta))


def test_binary_seg_segments_references_and_masks(ct_series, tmp_path):
    image = _load(ct_series)
    pred = Orientation(axcodes="RAS")(_prediction(image))  # another axis order than the reader's
    out = tmp_path / "out"
    out.mkdir()
    SaveDicomSegd("pred", out, labels={"0": "background", "1": "grey", "2": "white"})({"pred": pred})
    assert sorted(p.name for p in out.iterdir()) == ["series_seg.dcm"]  # nothing else (no temporary) left
    _check_references(out / "series_seg.dcm", ct_series)
    seg = hd.seg.segread(out / "series_seg.dcm")
    assert seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["grey", "white"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "91772007"
    expected = _prediction(image)[0].numpy()
    assert set(np.unique(expected)) == {0, 1, 2}
    np.testing.assert_array_equal(_seg_on_grid(seg, image.affine.numpy()), expected)


def test_fractional_seg_keeps_the_probabilities(ct_series, tmp_path):
    image = _load(ct_series)
    p1 = torch.sigmoid((image - 50.0) / 10.0)
    probs = MetaTensor(torch.cat([1 - p1, p1]), meta=dict(image.meta))
    SaveDicomSegd(
        "pred",
        tmp_path,
        labels={1: {"name": "brain", "type": ("12738006", "SCT", "Brain")}},
        segmentation_type="fractional",
    )({"pred": probs})
    seg = hd.seg.segread(tmp_path / "series_seg.dcm")
    assert seg.SegmentationType == "FRACTIONAL" and seg.number_of_segments == 1
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Brain"
    got = _seg_on_grid(seg, image.affine.numpy())[..., 0]
    np.testing.assert_allclose(got, p1[0].numpy(), atol=0.5 / 255 + 1e-6)


def test_bad_sources_and_output_folders_write_nothing(ct_series, ct_volume, tmp_path, write_series):
    image = _load(ct_series)
    pred = _prediction(image)
    nifti = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ct_volume, np.eye(4)), nifti)
    not_dicom = MetaTensor(pred.as_tensor(), meta={**pred.meta, "filename_or_obj": str(nifti)})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"DICOM series folder.*ct\.nii\.gz"):
        SaveDicomSegd("pred", out, labels={1: "a"})({"pred": not_dicom})
    with pytest.raises(ValueError, match=r"missing.*not an existing folder"):
        SaveDicomSegd("pred", tmp_path / "missing", labels={1: "a"})({"pred": pred})
    mixed = tmp_path / "mixed"
    shutil.copytree(ct_series, mixed)
    write_series(ct_volume[:8, :8, :2], tmp_path / "other")
    for f in (tmp_path / "other").iterdir():
        shutil.copy(f, mixed / f"other_{f.name}")
    mixed_pred = MetaTensor(pred.as_tensor(), meta={**pred.meta, "filename_or_obj": str(mixed)})
    with pytest.raises(ValueError, match=r"mixed mixes 2 DICOM series"):
        SaveDicomSegd("pred", out, labels={1: "a"})({"pred": mixed_pred})
    off_grid = MetaTensor(pred.as_tensor()[:, ::2], meta={**pred.meta, "affine": pred.affine @ np.diag([2, 1, 1, 1.0])})
    with pytest.raises(ValueError, match="not on the prediction's voxel grid"):
        SaveDicomSegd("pred", out, labels={1: "a"})({"pred": off_grid})
    assert list(out.iterdir()) == [] and not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="segmentation_type"):
        SaveDicomSegd("pred", out, segmentation_type="soft")


def test_3d_bundle_inference_on_a_dicom_series_writes_nifti_and_seg_on_its_grid(ct_series, tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [], "testing": [{"image": str(ct_series)}]}))
    out = tmp_path / "predictions"
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.yaml"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(tmp_path),
        datalist_file=str(datalist),
        output_dir=str(out),
        save_dicom_seg="true",  # as the command line gives it
        **TINY_3D,
    )
    wf.initialize()
    (tmp_path / "models").mkdir()
    torch.manual_seed(0)
    net = wf.parser.get_parsed_content("network_def")
    torch.save({"model": net.state_dict()}, tmp_path / "models" / "latest.pt")
    wf.run()
    wf.finalize()
    image = _load(ct_series)
    nii = nib.load(out / "series_seg.nii.gz")
    assert nii.shape == tuple(image.shape[1:])
    np.testing.assert_allclose(nii.affine, image.affine.numpy(), atol=1e-4)
    _check_references(out / "series_seg.dcm", ct_series)
    seg = hd.seg.segread(out / "series_seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["organ A", "organ B"]
    labels = np.asarray(nii.dataobj)
    assert len(np.unique(labels)) > 1  # the seeded tiny network predicts several classes: the comparison bites
    np.testing.assert_array_equal(_seg_on_grid(seg, nii.affine), labels)
