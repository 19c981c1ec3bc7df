"""The ``python`` tool under hostile cells: whatever a cell leaves in its work directory, the tool
returns an observation (never raises), and what it copies to the host stays within the limits."""

from __future__ import annotations

from pathlib import Path

from qwen_cli.agent.tools import MAX_IMAGES, PythonTool
from qwen_cli.sandbox import Limits

SMALL = Limits(wall_s=10, file_bytes=1 << 20, disk_bytes=4 << 20)


def _host_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_sparse_images_cannot_make_the_host_write_past_the_disk_cap(tmp_path):
    tool = PythonTool(out_dir=tmp_path, limits=SMALL)
    try:
        seen = tool.call("for i in range(12):\n    open(f'p{i}.png', 'wb').truncate(1 << 20)")
        assert not seen.error and "budget" in seen.text, seen.text  # 12 MiB offered, 4 MiB taken
        again = tool.call("for i in range(12):\n    open(f'q{i}.png', 'wb').truncate(1 << 20)")
        assert not again.error and again.images == []
    finally:
        tool.close()
    assert _host_bytes(tmp_path) <= SMALL.disk_bytes


def test_at_most_max_images_per_call(tmp_path):
    tool = PythonTool(out_dir=tmp_path, limits=SMALL)
    try:
        seen = tool.call("for i in range(50):\n    open(f'{i}.png', 'wb').write(b'x')")
    finally:
        tool.close()
    assert len(seen.images) == MAX_IMAGES and f"only the first {MAX_IMAGES} of 50" in seen.text
    assert len(list(tmp_path.glob("*.png"))) == MAX_IMAGES


def test_unreadable_and_reshaped_images_are_notes_not_exceptions(tmp_path):
    tool = PythonTool(out_dir=tmp_path, limits=SMALL)
    try:
        locked = tool.call("import os\nopen('plot.png', 'wb').write(b'x')\nos.chmod('plot.png', 0)")
        assert not locked.error and locked.images == [] and "plot.png: copy out" in locked.text, locked.text
        first = tool.call("open('a.png', 'wb').write(b'file')")
        assert first.images == [str(tmp_path / "a.png")]
        # a.png becomes a directory holding an image: the host's a.png is a file, so it cannot follow
        turned = tool.call("import os\nos.remove('a.png')\nos.mkdir('a.png')\nopen('a.png/b.png', 'wb').write(b'x')")
        assert not turned.error and turned.images == [] and "a.png/b.png: copy out" in turned.text, turned.text
        # and back: a file where the host now has ... still a file: copied
        back = tool.call("import shutil\nshutil.rmtree('a.png')\nopen('a.png', 'wb').write(b'again')")
        assert back.images == [str(tmp_path / "a.png")] and (tmp_path / "a.png").read_bytes() == b"again"
        # a FIFO or a link named like an image is not a regular file
        odd = tool.call("import os\nos.mkfifo('pipe.png')\nos.symlink('/etc/ld.so.cache', 'link.png')\nNone")
        assert not odd.error and odd.images == []
        assert tool.call("print('still here')").text == "still here"
    finally:
        tool.close()
