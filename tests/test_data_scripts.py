"""data_scripts/: verified, resumable downloads and offline fast-fail, on loopback only.

A local ``http.server`` on 127.0.0.1 serves fabricated files (with or without HTTP Range
support); "offline" is a closed port and a port that accepts but never answers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"
PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


def load_script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"data_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dl(monkeypatch):
    return load_script("_download", monkeypatch)


class Server:
    """Loopback HTTP server: ``files`` maps a path (with query) to bytes."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.honour_range = True
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if range_header and server.honour_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------- _download


def test_download_verifies_md5_and_sha256(server, dl, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = dl.download(server.url("/f.bin"), tmp_path / "f.bin", md5=md5(PAYLOAD),
                       sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "f.bin.part").exists()
    # a verified file is not fetched again
    dl.download(server.url("/f.bin"), dest, md5=md5(PAYLOAD), progress=False)
    assert len(server.requests) == 1


def test_download_resumes_a_partial_file_with_range(server, dl, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:3000])
    dl.download(server.url("/f.bin"), tmp_path / "f.bin", md5=md5(PAYLOAD), progress=False)
    assert server.requests == [("/f.bin", "bytes=3000-")]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_restarts_when_the_server_ignores_range(server, dl, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes that must not stay")
    dl.download(server.url("/f.bin"), tmp_path / "f.bin", md5=md5(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_of_a_complete_part_file_gets_416_and_verifies(server, dl, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    dl.download(server.url("/f.bin"), tmp_path / "f.bin", md5=md5(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_checksum_mismatch_leaves_nothing(server, dl, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    with pytest.raises(dl.ChecksumError, match="f.bin: md5 is .* the published value is 0{32}"):
        dl.download(server.url("/f.bin"), tmp_path / "f.bin", md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_http_error_is_reported(server, dl, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download(server.url("/absent"), tmp_path / "x", progress=False)


def test_download_fails_fast_on_a_closed_port(dl, tmp_path, closed_port):
    with pytest.raises(dl.DownloadError,
                       match=r"could not download from 127.0.0.1:\d+: .*[Rr]efused"):
        dl.download(f"http://127.0.0.1:{closed_port}/f.bin", tmp_path / "f.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_gives_up_on_a_silent_server(dl, tmp_path):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/f.bin"
        with pytest.raises(dl.DownloadError, match=r"timed out \(network timeout 0.2 s\)"):
            dl.download(url, tmp_path / "f.bin", timeout=0.2, progress=False)


def test_extract_zip_unwraps_a_single_folder_and_refuses_traversal(dl, tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as archive:
        archive.writestr("Top/a.txt", "a")
        archive.writestr("Top/sub/b.txt", "b")
    target = dl.extract_zip(good, tmp_path / "out")
    assert (target / "a.txt").read_text() == "a" and (target / "sub" / "b.txt").is_file()
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as archive:
        archive.writestr("x.jpg", "x")
        archive.writestr("y.jpg", "y")
    assert sorted(p.name for p in dl.extract_zip(flat, tmp_path / "flat").iterdir()) == [
        "x.jpg", "y.jpg"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escaped.txt", "x")
    with pytest.raises(dl.DownloadError, match="refused member '../escaped.txt'"):
        dl.extract_zip(evil, tmp_path / "evil")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil.partial").exists()


# ----------------------------------------------------------------------------- scripts


def _medmnist_npz() -> bytes:
    stream = io.BytesIO()
    arrays = {}
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = np.zeros((n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.zeros((n, 1), dtype=np.uint8)
    np.savez(stream, **arrays)
    return stream.getvalue()


def test_medmnist_script_downloads_verifies_and_checks(server, monkeypatch, tmp_path, capsys):
    script = load_script("medmnist", monkeypatch)
    payload = _medmnist_npz()
    server.files["/breastmnist.npz?download=1"] = payload
    monkeypatch.setattr(script, "ZENODO_URL", server.url("/{filename}?download=1"))
    monkeypatch.setitem(script.MD5, "breastmnist", (md5(payload), None, None, None))
    assert script.main(["--root", str(tmp_path), "--name", "breastmnist", "--no-progress"]) == 0
    assert (tmp_path / "medmnist" / "breastmnist.npz").read_bytes() == payload
    assert "train 4, val 2, test 2" in capsys.readouterr().out
    # a wrong checksum fails with exit status 2 and keeps no file
    monkeypatch.setitem(script.MD5, "breastmnist", ("f" * 32, None, None, None))
    (tmp_path / "medmnist" / "breastmnist.npz").unlink()
    assert script.main(["--root", str(tmp_path), "--name", "breastmnist", "--no-progress"]) == 2
    assert "md5 is" in capsys.readouterr().err
    assert not (tmp_path / "medmnist" / "breastmnist.npz").exists()


def test_medmnist_script_offline_fails_fast_with_a_message(monkeypatch, tmp_path, capsys,
                                                           closed_port):
    script = load_script("medmnist", monkeypatch)
    monkeypatch.setattr(script, "ZENODO_URL", f"http://127.0.0.1:{closed_port}/{{filename}}")
    assert script.main(["--root", str(tmp_path), "--no-progress"]) == 2
    assert "error: could not download from 127.0.0.1" in capsys.readouterr().err


def test_medmnist_script_checksums_are_well_formed(monkeypatch):
    script = load_script("medmnist", monkeypatch)
    for values in script.MD5.values():
        assert len(values) == 4
        assert all(len(v) == 32 and int(v, 16) >= 0 for v in values)


def test_isic_preprocessing_matches_flamby_recipe(monkeypatch, tmp_path):
    script = load_script("isic2019", monkeypatch)
    Image.new("RGB", (300, 200), (200, 100, 50)).save(tmp_path / "in.png")
    script.preprocess_image(tmp_path / "in.png", tmp_path / "out.png", size=224)
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (224, 336, 3)  # shorter side 224, aspect kept
    assert (out == 132).all()  # constant colour -> grey ||c|| / sqrt(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]  # no temp left


def test_isic_script_end_to_end(server, monkeypatch, tmp_path, capsys):
    script = load_script("isic2019", monkeypatch)
    columns = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    images = [f"ISIC_{k:07d}" for k in range(12)]
    labels = [k % 8 for k in range(12)]
    onehot = np.eye(9)[labels]
    truth = pd.DataFrame(onehot, columns=columns).assign(image=images)[["image", *columns]]
    split = truth.assign(center=[k % 6 for k in range(12)],
                         fold=["train", "test"] * 6)
    jpg = _png_bytes(Image.new("RGB", (30, 20), (200, 100, 50)), "JPEG")
    server.files["/ISIC_2019_Training_GroundTruth.csv"] = truth.to_csv(index=False).encode()
    server.files["/split"] = split.to_csv(index=False).encode()
    server.files["/ISIC_2019_Training_Input.zip"] = _zip_bytes(
        {f"ISIC_2019_Training_Input/{i}.jpg": jpg for i in images})
    monkeypatch.setattr(script, "FILES", {
        "ISIC_2019_Training_GroundTruth.csv": (server.url("/ISIC_2019_Training_GroundTruth.csv"),
                                               None),
        "train_test_split": (server.url("/split"), None),
        "ISIC_2019_Training_Input.zip": (server.url("/ISIC_2019_Training_Input.zip"), None),
    })
    monkeypatch.setattr(script, "EXPECTED_SPLIT_ROWS", 12)
    assert script.main(["--root", str(tmp_path), "--no-progress"]) == 0
    out_dir = tmp_path / "isic2019" / "ISIC_2019_Training_Input_preprocessed"
    assert len(list(out_dir.glob("*.jpg"))) == 12
    assert Image.open(out_dir / "ISIC_0000000.jpg").size == (336, 224)
    assert not (tmp_path / "isic2019" / "ISIC_2019_Training_Input.zip").exists()
    assert "client 5 HAM_vienna_dias" in capsys.readouterr().out


def test_isic_check_split_wants_flamby_shape(monkeypatch, tmp_path):
    script = load_script("isic2019", monkeypatch)
    pd.DataFrame({"image": ["a", "b"], "center": [0, 1], "fold": ["train", "test"]}).to_csv(
        tmp_path / "train_test_split", index=False)
    with pytest.raises(ValueError, match="expected 23247 rows and centres 0..5, found 2 rows.* "
                                         "moved aside to .*train_test_split.rejected"):
        script.check_split(tmp_path / "train_test_split")
    assert not (tmp_path / "train_test_split").exists()  # refetched on the next run
    assert (tmp_path / "train_test_split.rejected").is_file()  # but never deleted


def test_isic_skip_download_never_deletes_the_users_files(monkeypatch, tmp_path, capsys):
    script = load_script("isic2019", monkeypatch)
    folder = tmp_path / "isic2019"
    folder.mkdir()
    mine = "image,center,fold\nISIC_1,0,train\n"
    (folder / "train_test_split").write_text(mine)
    zip_bytes = _zip_bytes({"ISIC_2019_Training_Input/ISIC_1.jpg": b"x"})
    (folder / "ISIC_2019_Training_Input.zip").write_bytes(zip_bytes)
    assert script.main(["--root", str(tmp_path), "--skip-download", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "moved aside to" in err and "train_test_split.rejected" in err
    assert (folder / "train_test_split.rejected").read_text() == mine
    assert (folder / "ISIC_2019_Training_Input.zip").read_bytes() == zip_bytes


def test_a_users_file_with_another_checksum_is_moved_aside_not_deleted(server, monkeypatch,
                                                                       tmp_path, capsys):
    script = load_script("medmnist", monkeypatch)
    payload = _medmnist_npz()
    server.files["/breastmnist.npz?download=1"] = payload
    monkeypatch.setattr(script, "ZENODO_URL", server.url("/{filename}?download=1"))
    monkeypatch.setitem(script.MD5, "breastmnist", (md5(payload), None, None, None))
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "breastmnist.npz").write_bytes(b"my own edited copy")
    assert script.main(["--root", str(tmp_path), "--name", "breastmnist", "--no-progress"]) == 0
    assert (tmp_path / "medmnist" / "breastmnist.npz").read_bytes() == payload
    kept = tmp_path / "medmnist" / "breastmnist.npz.rejected"
    assert kept.read_bytes() == b"my own edited copy"
    assert f"moved aside to {kept}" in capsys.readouterr().err


def test_rsna_script_converts_splits_and_prints_kaggle_steps(server, monkeypatch, tmp_path,
                                                             capsys):
    script = load_script("rsna_ich", monkeypatch)
    split = {"train": {0: {"image": np.array(["ID_a"]), "label": np.array([0])}},
             "test": {0: {"image": np.array(["ID_b"]), "label": np.array([4])}}}
    for name in script.SPLITS:
        stream = io.BytesIO()
        np.save(stream, split, allow_pickle=True)
        server.files[f"/{name}"] = stream.getvalue()
    monkeypatch.setattr(script, "SPLIT_URL", server.url("/{filename}"))
    assert script.main(["--root", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "kaggle competitions download -c rsna-intracranial-hemorrhage-detection" in out
    converted = json.loads((tmp_path / "rsna_ich" / "ich_split_10clients.json").read_text())
    assert converted["test"]["0"] == {"image": ["ID_b"], "label": [4]}

    # with the Kaggle files in place the slices are windowed into PNGs
    kaggle = tmp_path / "kaggle"
    (kaggle / "stage_2_train").mkdir(parents=True)
    subtypes = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural",
                "any")
    pd.DataFrame({"ID": [f"ID_{i}_{s}" for i in "ab" for s in subtypes],
                  "Label": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1]}).to_csv(
        kaggle / "stage_2_train.csv", index=False)
    for image in ("ID_a", "ID_b"):  # HU 0, 40 / 80, 20
        write_ct_slice(kaggle / "stage_2_train" / f"{image}.dcm", [[1024, 1064], [1104, 1044]])
    assert script.main(["--root", str(tmp_path), "--kaggle-dir", str(kaggle),
                        "--no-progress"]) == 0
    png = np.asarray(Image.open(tmp_path / "rsna_ich" / "png" / "ID_a.png"))
    np.testing.assert_array_equal(png, [[0, 128], [255, 64]])  # round(255 * (0, .5, 1, .25))
    assert "(train, test) per client [(1, 1)]" in capsys.readouterr().out


def write_ct_slice(path: Path, stored, intercept: float = -1024.0) -> None:
    """A minimal CT DICOM file (16-bit signed, rescale intercept -1024)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    stored = np.asarray(stored, dtype=np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, intercept
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return stream.getvalue()


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=fmt)
    return stream.getvalue()


def test_ham10000_script_uses_dataverse_checksums(server, monkeypatch, tmp_path, capsys):
    script = load_script("ham10000", monkeypatch)
    sources = ["rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax"]
    ids = [f"ISIC_{k:07d}" for k in range(8)]
    meta = pd.DataFrame({"lesion_id": [f"HAM_{k}" for k in range(8)], "image_id": ids,
                         "dx": ["nv"] * 8, "dx_type": "histo", "age": 50.0, "sex": "male",
                         "localization": "back", "dataset": [sources[k % 4] for k in range(8)]})
    jpg = _png_bytes(Image.new("RGB", (6, 4), (120, 80, 60)), "JPEG")
    mask = _png_bytes(Image.new("L", (6, 4), 255))
    files = {
        "HAM10000_metadata.tab": meta.to_csv(index=False).encode(),
        "HAM10000_images_part_1.zip": _zip_bytes({f"{i}.jpg": jpg for i in ids[:4]}),
        "HAM10000_images_part_2.zip": _zip_bytes({f"{i}.jpg": jpg for i in ids[4:]}),
        "HAM10000_segmentations_lesion_tschandl.zip": _zip_bytes(
            {f"HAM10000_segmentations_lesion_tschandl/{i}_segmentation.png": mask for i in ids}),
    }
    listing = []
    for file_id, (name, data) in enumerate(files.items(), start=1):
        entry = {"id": file_id, "filename": name, "checksum": {"type": "MD5", "value": md5(data)}}
        suffix = ""
        if name.endswith(".tab"):  # an ingested table: served as the original CSV
            entry.update(originalFileFormat="text/csv", originalFileName="HAM10000_metadata.csv",
                         checksum={"type": "MD5", "value": "0" * 32})
            suffix = "?format=original"
        listing.append({"label": name, "dataFile": entry})
        server.files[f"/api/access/datafile/{file_id}{suffix}"] = data
    server.files["/api/datasets/list"] = json.dumps(
        {"status": "OK", "data": {"latestVersion": {"files": listing}}}).encode()
    monkeypatch.setattr(script, "DATASET_API", server.url("/api/datasets/list"))
    monkeypatch.setattr(script, "FILE_API", server.url("/api/access/datafile/{file_id}"))
    monkeypatch.setattr(script, "EXPECTED_IMAGES", 8)
    assert script.main(["--root", str(tmp_path), "--no-progress"]) == 0
    folder = tmp_path / "ham10000"
    assert (folder / "HAM10000_images_part_2" / "ISIC_0000007.jpg").is_file()
    assert (folder / "HAM10000_segmentations_lesion_tschandl" /
            "ISIC_0000000_segmentation.png").is_file()
    assert not list(folder.glob("*.zip"))
    assert "client 3 vidir_molemax" in capsys.readouterr().out

    # a zip whose bytes differ from the published MD5 is refused
    listing[1]["dataFile"]["checksum"]["value"] = "1" * 32
    server.files["/api/datasets/list"] = json.dumps(
        {"data": {"latestVersion": {"files": listing}}}).encode()
    import shutil

    shutil.rmtree(folder / "HAM10000_images_part_1")
    assert script.main(["--root", str(tmp_path), "--no-progress"]) == 2
    assert "md5 is" in capsys.readouterr().err


def test_ham10000_script_offline(monkeypatch, tmp_path, capsys, closed_port):
    script = load_script("ham10000", monkeypatch)
    monkeypatch.setattr(script, "DATASET_API", f"http://127.0.0.1:{closed_port}/api")
    assert script.main(["--root", str(tmp_path)]) == 2
    assert "could not download from 127.0.0.1" in capsys.readouterr().err


def test_busi_script_downloads_and_checks_layout(server, monkeypatch, tmp_path, capsys):
    script = load_script("busi", monkeypatch)
    mask = _png_bytes(Image.new("L", (4, 4), 0))
    image = _png_bytes(Image.new("L", (4, 4), 9))
    files = {}
    for name, count in (("benign", 2), ("malignant", 1), ("normal", 1)):
        for n in range(1, count + 1):
            files[f"Dataset_BUSI_with_GT/{name}/{name} ({n}).png"] = image
            files[f"Dataset_BUSI_with_GT/{name}/{name} ({n})_mask.png"] = mask
    server.files["/Dataset_BUSI.zip"] = _zip_bytes(files)
    monkeypatch.setattr(script, "BUSI_URL", server.url("/Dataset_BUSI.zip"))
    assert script.main(["--root", str(tmp_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "benign 2, malignant 1, normal 1" in captured.out
    assert "no published checksum to verify; sha256" in captured.err


@pytest.mark.parametrize("name", ["busis", "udiat"])
def test_request_only_scripts_print_steps_then_check_layout(name, monkeypatch, tmp_path, capsys):
    script = load_script(name, monkeypatch)
    assert script.main(["--root", str(tmp_path)]) == 1
    assert "available on request only" in capsys.readouterr().out
    for folder in ("original", "GT"):
        (tmp_path / name / folder).mkdir(parents=True)
        Image.new("L", (4, 4), 200).save(tmp_path / name / folder / "000001.png")
    assert script.main(["--root", str(tmp_path)]) == 0
    assert "1 image/mask pairs" in capsys.readouterr().out


def test_scripts_import_without_side_effects(monkeypatch):
    for name in ("medmnist", "isic2019", "ham10000", "rsna_ich", "busi", "busis", "udiat"):
        module = load_script(name, monkeypatch)
        assert callable(module.main)
