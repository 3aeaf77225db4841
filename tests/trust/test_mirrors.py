"""registries.conf against real registries: a docker-registry in proxy mode as the origin's
mirror (shared FACTS 35), pulls that go through it and keep working with the origin stopped,
a signature still checked against the origin's name, blocked registries, bad files."""

from __future__ import annotations

from tests.trust.conftest import write_policy, write_registries_d


def registries_conf(path, origin, mirror=None, **extra):
    lines = ["[[registry]]", f'prefix = "{origin}"', f'location = "{origin}"', "insecure = true"]
    lines += [
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in extra.items()
    ]
    if mirror:
        lines += ["[[registry.mirror]]", f'location = "{mirror}"', "insecure = true"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pulls_go_through_the_mirror_and_survive_the_origin(
    tcm, pushed, start_registry, gpg_keys, tmp_path
):
    origin, layout, _ref, digest = pushed
    trusted = gpg_keys["trusted"]
    store = tmp_path / "sigs"
    rd = write_registries_d(tmp_path / "registries.d", store, origin.host)
    ref = f"docker://{origin.host}/tcm/signed:v1"
    tcm("push", layout, ref, "--insecure-host", origin.host, "--sign-by", trusted.fingerprint,
        "--registries-d", rd, extra_env={"GNUPGHOME": str(trusted.home)})  # fmt: skip
    mirror = start_registry(remote=f"http://{origin.host}")
    conf = registries_conf(tmp_path / "registries.conf", origin.host, mirror.host)
    policy = write_policy(
        tmp_path / "policy.json",
        docker={f"{origin.host}/tcm": [{"type": "signedBy", "keyType": "GPGKeys",
                                        "keyPath": str(trusted.public)}]},
        default=[{"type": "reject"}],
    )  # fmt: skip
    args = ("--registries-conf", conf, "--policy", policy, "--registries-d", rd, "--all")

    first = tcm("pull", ref, "-c", tmp_path / "node1", *args)
    assert f"served by mirror {mirror.host}/tcm/signed" in first.stderr
    assert "verified: signedBy" in first.stderr  # against the origin's name
    assert "installed 9 entries" in first.stdout

    origin.stop()
    second = tcm("pull", ref, "-c", tmp_path / "node2", *args)
    assert f"served by mirror {mirror.host}" in second.stderr
    assert "installed 9 entries" in second.stdout
    # by digest too, from the mirror's store alone
    pinned = f"docker://{origin.host}/tcm/signed@{digest}"
    third = tcm("pull", pinned, "-c", tmp_path / "node3", *args)
    assert "installed 9 entries" in third.stdout
    # without the registries.conf the stopped origin is all there is
    gone = tcm("pull", ref, "-c", tmp_path / "node4", "--insecure-host", origin.host, "--all",
               ok=3)  # fmt: skip
    assert "cannot reach registry" in gone.stderr


def test_a_blocked_registry_is_refused(tcm, pushed, tmp_path):
    origin, _layout, ref, _digest = pushed
    conf = registries_conf(tmp_path / "registries.conf", origin.host, blocked=True)
    got = tcm("pull", ref, "-c", tmp_path / "node", "--all", "--registries-conf", conf, ok=3)
    assert got.stderr.strip().splitlines()[-1] == (
        f"error: {origin.host}/tcm/cache is blocked by registries.conf ({conf}, prefix "
        f'"{origin.host}"): pull it from a registry the node allows'
    )
    assert not (tmp_path / "node").exists()


def test_a_registries_conf_that_does_not_parse(tcm, pushed, tmp_path):
    _origin, _layout, ref, _digest = pushed
    bad = tmp_path / "registries.conf"
    bad.write_text('[[registry]]\nprefix = "unterminated\n')
    got = tcm("pull", ref, "-c", tmp_path / "node", "--all", "--registries-conf", bad, ok=2)
    assert got.stderr.startswith(f"error: registries.conf {bad} does not parse:")
    assert len(got.stderr.strip().splitlines()) == 1
    v1 = tmp_path / "v1.conf"
    v1.write_text('[registries.insecure]\nregistries = ["x"]\n')
    got = tcm("pull", ref, "-c", tmp_path / "node", "--all", "--registries-conf", v1, ok=2)
    assert "v1 format" in got.stderr
