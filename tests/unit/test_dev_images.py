import io
import json
import tarfile

from shoal.dev.images import busybox_spec, dev_images, image_id, save_archive


def _read(archive: bytes, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return tar.extractfile(path).read()


def _members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _manifest(archive: bytes) -> dict[str, dict]:
    return {m["RepoTags"][0]: m for m in json.loads(_read(archive, "manifest.json"))}


def test_archive_is_byte_for_byte_the_same_every_time():
    a, b = save_archive(dev_images()), save_archive(dev_images())
    assert a == b
    assert image_id(a, "busybox:latest") == image_id(b, "busybox:latest")


def test_busybox_has_a_shell_the_tools_tests_use_and_a_sticky_tmp():
    archive = save_archive([busybox_spec()])
    [layer] = _manifest(archive)["busybox:latest"]["Layers"]
    files = _members(_read(archive, layer))
    for applet in ("bin/sh", "usr/sbin/httpd", "usr/bin/nc", "bin/sleep", "usr/bin/wget"):
        assert files[applet].issym() and files[applet].linkname == "/bin/busybox", applet
    assert files["bin/busybox"].isfile()
    assert files["tmp"].isdir() and files["tmp"].mode == 0o1777
    assert files["etc/passwd"].isfile()


def test_redis_sits_on_the_busybox_layer_and_carries_its_libraries():
    archive = save_archive(dev_images())
    manifest = _manifest(archive)
    assert manifest["redis:latest"]["Layers"][0] == manifest["busybox:latest"]["Layers"][0]
    files = _members(_read(archive, manifest["redis:latest"]["Layers"][1]))
    assert "usr/local/bin/redis-server" in files
    assert any(name.startswith("lib") and "libc.so" in name for name in files)
    config = json.loads(_read(archive, manifest["redis:latest"]["Config"]))
    assert config["config"]["Cmd"][0] == "redis-server"
    assert "6379/tcp" in config["config"]["ExposedPorts"]
