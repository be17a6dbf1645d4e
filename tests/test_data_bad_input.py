"""Every bad input of issue 3 gives a one-line error naming the file/row (exit 2, no traceback), or is
skipped and listed with ``--on-bad-image skip``. Small datasets are written to tmp_path from synthetic images."""
from __future__ import annotations

import json
import shutil

import cv2
import pytest
from click.testing import CliRunner

from edgeretina.cli import cli
from edgeretina.data import load_arrays, open_dataset
from edgeretina.data.synthetic import generate
from edgeretina.errors import DataError
from edgeretina.preprocess import Pipeline

ODIR_HEADER = ("ID,Patient Age,Patient Sex,Left-Fundus,Right-Fundus,Left-Diagnostic Keywords,"
               "Right-Diagnostic Keywords,Normal,Diabetes,Glaucoma,Cataract,Age related Macular Degeneration,"
               "Hypertension,Pathological Myopia,Other diseases/abnormalities")


@pytest.fixture(scope="module")
def pics():
    return generate(16, seed=11, size=64)[0]


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[:, :, ::-1])


def make_odir(root, pics, short_names=False):
    rows = []
    for pid in range(1, 9):
        lk = "glaucoma" if pid % 2 else "normal fundus"
        _write(root / "images" / f"{pid}_left.jpg", pics[2 * pid - 2])
        _write(root / "images" / f"{pid}_right.jpg", pics[2 * pid - 1])
        flags = "0,0,1,0,0,0,0,0" if pid % 2 else "1,0,0,0,0,0,0,0"
        rows.append(f"{pid},60,Male,{pid}_left.jpg,{pid}_right.jpg,{lk},normal fundus,{flags}")
    header = ODIR_HEADER if not short_names else ODIR_HEADER.split(",Normal")[0] + ",N,D,G,C,A,H,M,O"
    (root / "annotations.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return root


def make_aptos(root, pics, ext=".png"):
    lines = ["id_code,diagnosis"]
    for i in range(10):
        _write(root / "train_images" / f"img{i:03d}{ext}", pics[i])
        lines.append(f"img{i:03d},{i % 5}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def run(*args):
    r = CliRunner().invoke(cli, ["data", "summary", *map(str, args)])
    return r.exit_code, r.output


def assert_one_line_error(code, out, *needles):
    assert code == 2, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ---------------------------------------------------------------------------------------------- good
def test_mini_odir_long_and_short_column_names(tmp_path, pics):
    for short in (False, True):
        root = make_odir(tmp_path / f"odir{short}", pics, short_names=short)
        code, out = run(root, "--task", "glaucoma", "--json")
        assert code == 0, out
        s = json.loads(out)
        assert s["classes"] == {"normal": 12, "glaucoma": 4} and s["n_patients"] == 8


def test_mini_aptos_any_extension(tmp_path, pics):
    root = make_aptos(tmp_path / "aptos", pics, ext=".png")
    ds = open_dataset(root, "dr")
    assert ds.format == "aptos" and len(ds.records) == 10 and ds.records[0].source.endswith(".png")


def test_imagefolder_glaucoma_and_classes(tmp_path, pics):
    for i in range(6):
        _write(tmp_path / "if" / "Normal" / f"n{i}.jpg", pics[i])
        _write(tmp_path / "if" / "Glaucoma" / f"g{i}.png", pics[6 + i])
    ds = open_dataset(tmp_path / "if")
    assert ds.format == "imagefolder" and ds.spec.task.value == "glaucoma"
    assert ds.class_counts() == {"normal": 6, "glaucoma": 6}
    assert all(r.y == 1 for r in ds.records if "Glaucoma" in r.source)
    gen = open_dataset(tmp_path / "if", "classes")
    assert gen.spec.labels == ("Glaucoma", "Normal")
    for i in range(3):
        _write(tmp_path / "if3" / "cataract" / f"c{i}.jpg", pics[i])
        _write(tmp_path / "if3" / "dr" / f"d{i}.jpg", pics[3 + i])
        _write(tmp_path / "if3" / "healthy" / f"h{i}.jpg", pics[6 + i])
    three = open_dataset(tmp_path / "if3")
    assert three.spec.task.value == "classes" and three.spec.labels == ("cataract", "dr", "healthy")
    code, out = run(tmp_path / "if3", "--task", "glaucoma")
    assert_one_line_error(code, out, "if3", "not a normal/glaucoma pair")


def test_imagefolder_duplicates_grouped(tmp_path, pics):
    for i in range(6):
        _write(tmp_path / "d" / "normal" / f"n{i}.png", pics[i])
        _write(tmp_path / "d" / "glaucoma" / f"g{i}.png", pics[6 + i])
    shutil.copy(tmp_path / "d" / "normal" / "n0.png", tmp_path / "d" / "glaucoma" / "copy_of_n0.png")
    ds = open_dataset(tmp_path / "d")
    assert ds.info["duplicate_groups"] == 1 and any("label conflict" in p and "copy_of_n0.png" in p for p in ds.problems)
    groups = {r.group for r in ds.records if r.key.endswith(("n0.png", "copy_of_n0.png"))}
    assert len(groups) == 1


# ---------------------------------------------------------------------------------------------- bad images
@pytest.mark.parametrize("kind, needle", [
    ("zero", "zero-byte file"),
    ("text", "not an image (unknown file signature)"),
    ("trunc_jpg", "truncated JPEG"),
    ("trunc_png", "truncated PNG"),
])
def test_bad_image_files(tmp_path, pics, kind, needle):
    root = make_odir(tmp_path / "odir", pics)
    target = root / "images" / "3_left.jpg"
    if kind == "zero":
        target.write_bytes(b"")
    elif kind == "text":
        target.write_text("<html>not a fundus</html>")
    elif kind == "trunc_jpg":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    else:  # a PNG behind a .jpg name, cut short
        ok, b = cv2.imencode(".png", pics[0])
        target.write_bytes(b.tobytes()[: len(b) // 2])
    code, out = run(root, "--task", "glaucoma")
    assert_one_line_error(code, out, "3_left.jpg", needle)
    code, out = run(root, "--task", "glaucoma", "--on-bad-image", "skip", "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["classes"]["glaucoma"] == 3 and len(s["skipped"]) == 1 and "3_left.jpg" in s["skipped"][0]


def test_corrupt_jpeg_found_by_full_verify_and_by_loading(tmp_path, pics):
    root = make_odir(tmp_path / "odir", pics)
    target = root / "images" / "5_left.jpg"
    data = bytearray(target.read_bytes())
    data[4:300] = bytes((i * 37) % 256 for i in range(296))  # headers destroyed, SOI and EOI kept
    target.write_bytes(bytes(data))
    code, out = run(root, "--task", "glaucoma", "--verify", "full")
    assert_one_line_error(code, out, "5_left.jpg", "corrupt JPEG")
    ds = open_dataset(root, "glaucoma")  # header check alone does not decode
    with pytest.raises(DataError, match="5_left.jpg: corrupt JPEG"):
        load_arrays(ds.records, Pipeline.default(32, "tf"))
    problems = []
    X, y = load_arrays(ds.records, Pipeline.default(32, "tf"), ds.spec, on_bad_image="skip", problems=problems)
    assert len(X) == len(y) == len(ds.records) - 1 and "5_left.jpg" in problems[0]


# ---------------------------------------------------------------------------------------------- bad CSVs
def test_csv_row_pointing_to_missing_file(tmp_path, pics):
    root = make_odir(tmp_path / "odir", pics)
    (root / "images" / "4_right.jpg").unlink()
    code, out = run(root, "--task", "glaucoma")
    assert_one_line_error(code, out, "annotations.csv line 5 (ID 4)", "4_right.jpg not found")
    aptos = make_aptos(tmp_path / "aptos", pics)
    (aptos / "train_images" / "img007.png").unlink()
    code, out = run(aptos, "--task", "dr")
    assert_one_line_error(code, out, "train.csv line 9 (id_code img007)", "not found")
    code, out = run(aptos, "--task", "dr", "--on-bad-image", "skip")
    assert code == 0 and "skipped" in out and "img007" in out


def test_missing_and_wrong_csv_columns(tmp_path, pics):
    root = make_odir(tmp_path / "odir", pics)
    text = (root / "annotations.csv").read_text().replace("Left-Fundus", "LeftImage")
    (root / "annotations.csv").write_text(text)
    code, out = run(root, "--task", "glaucoma")
    assert_one_line_error(code, out, "annotations.csv", "missing column(s) 'Left-Fundus'")
    aptos = make_aptos(tmp_path / "aptos", pics)
    (aptos / "train.csv").write_text("image,level\nimg000,0\n")
    code, out = run(aptos, "--task", "dr")
    assert_one_line_error(code, out, "train.csv", "missing column(s) 'id_code', 'diagnosis'")


def test_unknown_labels(tmp_path, pics):
    aptos = make_aptos(tmp_path / "aptos", pics)
    text = (aptos / "train.csv").read_text().replace("img003,3", "img003,7")
    (aptos / "train.csv").write_text(text)
    code, out = run(aptos, "--task", "dr")
    assert_one_line_error(code, out, "train.csv line 5 (id_code img003)", "unknown label '7'")
    root = make_odir(tmp_path / "odir", pics)
    text = (root / "annotations.csv").read_text().replace("normal fundus,0,0,1", "normal fundus,0,0,yes")
    (root / "annotations.csv").write_text(text)
    code, out = run(root, "--task", "glaucoma")
    assert_one_line_error(code, out, "annotations.csv line 2 (ID 1)", "unknown label 'yes' in column 'Glaucoma'")


def test_task_the_dataset_cannot_serve(tmp_path, pics, shared):
    aptos = make_aptos(tmp_path / "aptos", pics)
    code, out = run(aptos, "--task", "glaucoma")
    assert_one_line_error(code, out, "APTOS-2019 dataset cannot serve task 'glaucoma'", "dr, referable-dr")
    code, out = run(shared / "data" / "retinamnist" / "retinamnist.npz", "--task", "odir")
    assert_one_line_error(code, out, "retinamnist.npz", "cannot serve task 'odir'")
    code, out = run(make_odir(tmp_path / "odir", pics), "--task", "dr")
    assert_one_line_error(code, out, "ODIR-5K dataset cannot serve task 'dr'")
    code, out = run(aptos, "--task", "cats")
    assert_one_line_error(code, out, "unknown task 'cats'")


def test_split_with_a_single_class(tmp_path, pics):
    for i in range(6):
        _write(tmp_path / "one" / "normal" / f"n{i}.jpg", pics[i])
    _write(tmp_path / "one" / "glaucoma" / "g0.jpg", pics[8])
    code, out = run(tmp_path / "one")
    assert_one_line_error(code, out, "one: split '", "of '70/10/20' has a single class (normal: 1 images)")
    code, out = run(tmp_path / "one", "--split", "all")
    assert code == 0, out


def test_not_a_dataset_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    code, out = run(tmp_path / "empty")
    assert_one_line_error(code, out, "empty", "not a dataset edgeretina recognises")
    code, out = run(tmp_path / "nope")
    assert_one_line_error(code, out, "nope", "no such file or directory")
    code, out = run("synthetic:n=8,size=32", "--split", "60-40")
    assert_one_line_error(code, out, "unknown split '60-40'")
    code, out = run(tmp_path / "empty", "--format", "synthetic")
    assert_one_line_error(code, out, "empty", "not a synthetic dataset spec")


def test_release_layout_variants(tmp_path, pics):
    """Original-release folder names: an ODIR CSV under another name beside 'ODIR-5K_Training_Dataset/',
    and ACRIMA/Drishti-style 'Glaucoma_Positive'/'Glaucoma_Negative' class folders."""
    root = make_odir(tmp_path / "odir", pics)
    (root / "annotations.csv").rename(root / "full_df.csv")
    (root / "images").rename(root / "ODIR-5K_Training_Dataset")
    ds = open_dataset(root, "glaucoma")
    assert ds.format == "odir" and ds.class_counts() == {"normal": 12, "glaucoma": 4}
    for i in range(4):
        _write(tmp_path / "if" / "Glaucoma_Negative" / f"n{i}.jpg", pics[i])
        _write(tmp_path / "if" / "Glaucoma_Positive" / f"g{i}.jpg", pics[8 + i])
    ds = open_dataset(tmp_path / "if")
    assert ds.spec.task.value == "glaucoma"
    assert all(r.y == (1 if "Positive" in r.source else 0) for r in ds.records)
