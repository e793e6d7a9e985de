"""glue.extract_tar on hostile archives, built member by member as an attacker would: absolute
names, '..', devices, links out of the archive, chains of symlinks that only escape once all are
in place, writes through a symlink an earlier member planted, hard links to outside or to a
symlink. Each is refused by name and leaves nothing behind; a sound archive (with an internal
symlink and hard link) unpacks, without setuid bits or group/other write."""
import io
import os
import tarfile

import pytest

from salt_mailha import glue
from salt_mailha.core.errors import MailhaError


def member(name, kind="file", data=b"x", link=None, mode=0o644):
    info = tarfile.TarInfo(name)
    info.mode = mode
    if kind == "file":
        info.size = len(data)
        return info, io.BytesIO(data)
    info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                 "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = link or ""
    if kind == "dir":
        info.mode = 0o755
    return info, None


def archive(tmp_path, *members):
    path = tmp_path / "in.tar"
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, data)
    return path


def SOUND():  # noqa: N802 - built afresh each time: the members' data are read once
    return [member("pkg", "dir"), member("pkg/run.sh", data=b"#!/bin/sh\n", mode=0o4777),
            member("pkg/conf", "dir"), member("pkg/conf/a.cf", data=b"a=1\n", mode=0o666),
            member("pkg/current", "sym", link="conf/a.cf"), member("pkg/again", "hard", link="pkg/conf/a.cf")]

HOSTILE = {  # each a function: fresh members per test
    "absolute": lambda: [member("/etc/evil")],
    "dotdot": lambda: [member("pkg", "dir"), member("pkg/../../evil")],
    "device": lambda: [member("pkg", "dir"), member("pkg/null", "chr")],
    "fifo": lambda: [member("pkg", "dir"), member("pkg/pipe", "fifo")],
    "symlink-absolute": lambda: [member("pkg", "dir"), member("pkg/passwd", "sym", link="/etc/passwd")],
    "symlink-up": lambda: [member("pkg", "dir"), member("pkg/up", "sym", link="../..")],
    # each link alone stays inside, lexically; together they lead out
    "symlink-chain": lambda: [member("pkg", "dir"), member("pkg/a", "sym", link="."),
                              member("pkg/b", "sym", link="a/a/a/../.."), member("pkg/c", "sym", link="b/b/etc")],
    "write-through-symlink": lambda: [member("pkg", "dir"), member("pkg/d", "sym", link="."),
                                      member("pkg/d/evil")],
    "replace-symlink": lambda: [member("pkg", "dir"), member("pkg/f", "sym", link="g"), member("pkg/f")],
    "hardlink-outside": lambda: [member("pkg", "dir"), member("pkg/shadow", "hard", link="../etc/shadow")],
    "hardlink-absolute": lambda: [member("pkg", "dir"), member("pkg/shadow", "hard", link="/etc/shadow")],
    "hardlink-to-symlink": lambda: [member("pkg", "dir"), member("pkg/s", "sym", link="t"), member("pkg/t"),
                                    member("pkg/h", "hard", link="pkg/s")],
    "path-through-file": lambda: [member("pkg"), member("pkg/inner")],
}


def test_sound_archive_unpacks_without_dangerous_modes(tmp_path):
    dest = tmp_path / "dest"
    assert glue.extract_tar(archive(tmp_path, *SOUND()), str(dest)) == ["pkg"]
    assert (dest / "pkg/current").read_text() == "a=1\n" and os.readlink(dest / "pkg/current") == "conf/a.cf"
    assert os.stat(dest / "pkg/again").st_ino == os.stat(dest / "pkg/conf/a.cf").st_ino
    assert oct(os.stat(dest / "pkg/run.sh").st_mode & 0o7777) == oct(0o755)  # no setuid, no o+w
    assert oct(os.stat(dest / "pkg/conf/a.cf").st_mode & 0o7777) == oct(0o644)
    assert sorted(os.listdir(dest)) == ["pkg"]  # no scratch directory left


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path, case):
    dest = tmp_path / "dest"
    outside = tmp_path / "etc"
    outside.mkdir()
    with pytest.raises(MailhaError, match="unsafe member") as err:
        glue.extract_tar(archive(tmp_path, *HOSTILE[case]()), str(dest))
    assert "refusing it" in str(err.value)
    assert os.listdir(dest) == [], case  # nothing half-unpacked
    assert os.listdir(outside) == [] and not (tmp_path / "evil").exists()


def test_an_existing_destination_is_not_overwritten(tmp_path):
    dest = tmp_path / "dest"
    (dest / "pkg").mkdir(parents=True)
    with pytest.raises(MailhaError, match="already exists"):
        glue.extract_tar(archive(tmp_path, *SOUND()), str(dest))
    assert os.listdir(dest) == ["pkg"] and os.listdir(dest / "pkg") == []
