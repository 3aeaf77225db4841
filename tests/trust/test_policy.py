"""policy.json as containers reads it: the most specific scope wins, signedIdentity's forms,
refusals that need no network, bad files in one line, and the notice when there is none."""

from __future__ import annotations

import json
import logging

import pytest

from tcmtasks.errors import TrustConfigError, UntrustedImage
from tcmtasks.oci.refs import parse
from tcmtasks.trust import policy as policy_mod
from tcmtasks.trust.identity import parse_identity
from tcmtasks.trust.mirrors import load as load_conf
from tcmtasks.trust.names import docker_scopes, name_of, parse_name
from tcmtasks.trust.policy import load_policy
from tests.trust.conftest import write_policy


def test_the_most_specific_scope_wins(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "": [{"type": "reject"}],
                "reg.example.com": [{"type": "insecureAcceptAnything"}],
                "reg.example.com/team/cache:v1": [{"type": "reject"}],
                "*.example.com": [{"type": "reject"}],
            },
            "oci": {str(tmp_path): [{"type": "insecureAcceptAnything"}]},
        },
    }))  # fmt: skip
    pol = load_policy(path)

    def chosen(ref):
        scope, reqs = pol.requirements_for(parse(ref))
        return scope, [r.type for r in reqs]

    assert chosen("docker://reg.example.com/team/cache:v1") == (
        'transports.docker["reg.example.com/team/cache:v1"]', ["reject"])  # fmt: skip
    assert chosen("docker://reg.example.com/team/cache:v2")[1] == ["insecureAcceptAnything"]
    assert chosen("docker://other.example.com/x:v1")[0] == 'transports.docker["*.example.com"]'
    assert chosen("docker://elsewhere.io/x:v1")[0] == 'transports.docker[""]'
    assert chosen(f"oci:{tmp_path / 'img'}:v1")[1] == ["insecureAcceptAnything"]
    assert chosen("oci:/somewhere/else:v1")[0] == "default"
    assert docker_scopes(name_of(parse("docker://a.b.example.com:5000/ns/r@sha256:" + "0" * 64)))[
        1:
    ] == ["a.b.example.com:5000/ns/r", "a.b.example.com:5000/ns", "a.b.example.com:5000",
          "*.b.example.com", "*.example.com", "*.com"]  # fmt: skip


@pytest.mark.parametrize(
    ("identity", "image", "signed", "ok"),
    [
        ({"type": "matchExact"}, "r.io/a/b:v1", "r.io/a/b:v1", True),
        ({"type": "matchExact"}, "r.io/a/b:v1", "r.io/a/b:v2", False),
        (None, "r.io/a/b:v1", "r.io/a/b:v1", True),  # matchRepoDigestOrExact
        (None, "r.io/a/b:v1", "r.io/a/b", False),
        (None, "r.io/a/b@sha256:" + "1" * 64, "r.io/a/b:v9", True),
        (None, "r.io/a/b@sha256:" + "1" * 64, "r.io/a/c:v9", False),
        ({"type": "matchRepository"}, "r.io/a/b:v1", "r.io/a/b:v7", True),
        ({"type": "matchRepository"}, "r.io/a/b:v1", "r.io/a/bb:v1", False),
        ({"type": "exactReference", "dockerReference": "r.io/x/y:v3"}, "r.io/a/b:v1",
         "r.io/x/y:v3", True),
        ({"type": "exactReference", "dockerReference": "r.io/x/y:v3"}, "r.io/a/b:v1",
         "r.io/x/y:v4", False),
        ({"type": "exactRepository", "dockerRepository": "r.io/x/y"}, "r.io/a/b:v1",
         "r.io/x/y:any", True),
        ({"type": "remapIdentity", "prefix": "mirror.io/m", "signedPrefix": "r.io/a"},
         "mirror.io/m/b:v1", "r.io/a/b:v1", True),
        ({"type": "remapIdentity", "prefix": "mirror.io/m", "signedPrefix": "r.io/a"},
         "mirror.io/mm/b:v1", "r.io/a/b:v1", False),  # not a path-component prefix
        (None, "busybox:1", "docker.io/library/busybox:1", True),  # normalised
    ],
)  # fmt: skip
def test_signed_identity_forms(identity, image, signed, ok):
    ident = parse_identity(identity, "test")
    assert ident.matches(parse_name(image), parse_name(signed)) is ok


def test_bad_policies_are_one_line_errors(tmp_path):
    cases = {
        '{"default": [{"type": "signedByMagic"}]}': "unknown requirement type 'signedByMagic'",
        '{"transports": {}}': 'has no "default"',
        "{not json": "cannot be read as JSON",
        '{"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}': "exactly one of keyPath",
        '{"default": [{"type": "signedBy", "keyType": "X509", "keyPath": "/k"}]}': "GPGKeys",
        '{"default": [{"type": "sigstoreSigned", "fulcio": {}}]}': "fulcio is not supported",
        '{"default": [{"type": "reject", "extra": 1}]}': "reject takes no other keys",
        '{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": '
        '{"r.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "eA==", '
        '"signedIdentity": {"type": "matchWhatever"}}]}}}': "signedIdentity type 'matchWhatever'",
    }
    for text, message in cases.items():
        path = tmp_path / "p.json"
        path.write_text(text)
        with pytest.raises(TrustConfigError, match=message) as exc:
            load_policy(path)
        assert "\n" not in str(exc.value)


def test_refusals_that_need_no_network(tcm, tmp_path, cache):
    unreachable = "docker://127.0.0.1:9/tcm/cache:v1"  # discard port: nothing answers
    rejecting = write_policy(tmp_path / "reject.json", default=[{"type": "reject"}])
    got = tcm("pull", unreachable, "--policy", rejecting, "-c", tmp_path / "n", "--all", ok=3)
    assert "the policy rejects this image" in got.stderr and "cannot reach" not in got.stderr
    # a layout carries no signatures: a signature requirement refuses it
    layout = tmp_path / "img"
    tcm("package", cache, f"oci:{layout}:v1")
    key = tmp_path / "k.gpg"
    key.write_bytes(b"not a key")
    signed_only = write_policy(
        tmp_path / "signed.json",
        default=[{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key)}],
    )
    got = tcm("extract", f"oci:{layout}:v1", "--policy", signed_only, "-c", tmp_path / "n",
              "--all", ok=3)  # fmt: skip
    assert "oci: images carry none" in got.stderr and not (tmp_path / "n").exists()
    # the default (insecureAcceptAnything) lets it through
    ok = write_policy(tmp_path / "ok.json")
    got = tcm("extract", f"oci:{layout}:v1", "--policy", ok, "-c", tmp_path / "n", "--all")
    assert "installed 9 entries" in got.stdout
    # an unknown requirement type: exit 2, one line
    odd = tmp_path / "odd.json"
    odd.write_text('{"default": [{"type": "signedByAnyone"}]}')
    got = tcm("extract", f"oci:{layout}:v1", "--policy", odd, "--all", ok=2)
    assert got.stderr.strip().splitlines() == [
        f"error: {odd}: default[0]: unknown requirement type 'signedByAnyone'; policy.json "
        "knows insecureAcceptAnything, reject, signedBy, sigstoreSigned"
    ]
    # a policy file that is not there is an error, not "no policy"
    got = tcm("extract", f"oci:{layout}:v1", "--policy", tmp_path / "nope.json", "--all", ok=2)
    assert got.stderr.strip() == f"error: policy file {tmp_path / 'nope.json'} does not exist"


def test_a_gpg_key_file_that_is_not_one(tmp_path):
    from tcmtasks.trust.simplesign import verify

    with pytest.raises(TrustConfigError, match="holds no GPG public key"):
        verify(b"whatever", [(str(tmp_path / "k"), b"not a key")])


def test_without_a_policy_file_a_notice_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(policy_mod, "SYSTEM_POLICY", tmp_path / "no-such-policy.json")
    from tcmtasks.trust.verify import TrustOptions, node_policy

    with caplog.at_level(logging.WARNING, logger="tcm"):
        assert node_policy(TrustOptions()) is None
        assert node_policy(TrustOptions()) is None
    notices = [r for r in caplog.records if "no containers policy.json" in r.getMessage()]
    assert len(notices) == 1


def test_registries_conf_rules(tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text(
        '[[registry]]\nprefix = "r.io/team"\nlocation = "internal.io/mirror/team"\n'
        '[[registry.mirror]]\nlocation = "cache.local/team"\npull-from-mirror = "digest-only"\n'
        '[[registry]]\nprefix = "*.blocked.io"\nblocked = true\n'
    )
    rules = load_conf(conf)
    by_tag = rules.endpoints(parse("docker://r.io/team/cache:v1"))
    assert [(e.ref.host, e.ref.repo, e.mirror) for e in by_tag] == [
        ("internal.io", "mirror/team/cache", False)]  # digest-only mirror skipped  # fmt: skip
    by_digest = rules.endpoints(parse("docker://r.io/team/cache@sha256:" + "2" * 64))
    assert [(e.ref.host, e.ref.repo) for e in by_digest] == [
        ("cache.local", "team/cache"), ("internal.io", "mirror/team/cache")]  # fmt: skip
    assert rules.endpoints(parse("docker://r.io/teams/x:v1"))[0].ref.host == "r.io"  # no match
    with pytest.raises(UntrustedImage, match=r"blocked by registries\.conf"):
        rules.endpoints(parse("docker://eu.blocked.io/x:v1"))
    conf.write_text('[[registry]]\nprefix = "r.io"\n[[registry.mirror]]\nlocation = "m"\n'
                    'pull-from-mirror = "sometimes"\n')  # fmt: skip
    with pytest.raises(TrustConfigError, match="pull-from-mirror 'sometimes'"):
        load_conf(conf)
