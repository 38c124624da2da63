import asyncio
from pathlib import Path

from pyhost import FormData, UploadFile


def test_form_data_is_a_multi_dict():
    upload = UploadFile("a.txt", "text/plain", 3, [("content-type", "text/plain")], data=b"abc")
    form = FormData([("tag", "a"), ("file", upload), ("tag", "b")])
    assert form["tag"] == "b"
    assert form.getlist("tag") == ["a", "b"]
    assert list(form) == ["tag", "file"]
    assert len(form) == 2
    assert "file" in form
    assert form.files() == [("file", upload)]
    assert form.multi_items()[1] == ("file", upload)


def test_an_upload_in_memory_reads_in_pieces():
    upload = UploadFile("a.bin", None, 5, data=b"hello")

    async def read():
        first = await upload.read(2)
        rest = await upload.read()
        await upload.seek(1)
        again = await upload.read(3)
        return first, rest, again

    assert asyncio.run(read()) == (b"he", b"llo", b"ell")
    assert upload.in_memory
    assert upload.headers.get("content-type") is None


def test_a_spooled_upload_reads_from_its_file(tmp_path: Path):
    path = tmp_path / "spooled"
    path.write_bytes(b"0123456789")
    upload = UploadFile("big.bin", "application/octet-stream", 10, path=str(path))

    async def read():
        first = await upload.read(4)
        rest = await upload.read()
        await upload.seek(8)
        tail = await upload.read()
        await upload.close()
        return first, rest, tail

    assert asyncio.run(read()) == (b"0123", b"456789", b"89")
    assert not upload.in_memory
    assert repr(upload).startswith("UploadFile(filename='big.bin'")
