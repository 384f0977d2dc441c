"""Goal state and small documents: every fixture parses; what is missing is refused with a reason."""

import pytest
from hypothesis import given, settings, strategies as st

from workers.platform import documents
from workers.platform.errors import DocumentError, NoRoleInstanceError
from workers.platform.goalstate import parse_goal_state

GOAL_STATES = ["goal_state.xml", "goal_state_no_ext.xml", "goal_state_no_certs.xml",
               "goal_state_remote_access.xml"]

GOAL_STATE_TEMPLATE = """<?xml version="1.0" encoding="utf-8"?>
<GoalState><Version>2010-12-15</Version><Incarnation>{inc}</Incarnation>
<Machine><ExpectedState>Started</ExpectedState></Machine>
<Container><ContainerId>{cid}</ContainerId><RoleInstanceList><RoleInstance>
<InstanceId>{iid}</InstanceId><State>Started</State><Configuration>
<ExtensionsConfig>{url}</ExtensionsConfig><ConfigName>{name}</ConfigName>
</Configuration></RoleInstance></RoleInstanceList></Container></GoalState>"""


@pytest.mark.parametrize("name", GOAL_STATES)
def test_every_goal_state_fixture_parses(fixtures_dir, name):
    gs = parse_goal_state((fixtures_dir / "wire" / name).read_bytes())
    assert gs.incarnation == "1"
    assert gs.container_id == "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2"
    assert gs.role_instance_id.endswith(".MachineRole_IN_0")
    assert gs.id == "incarnation_1"
    assert gs.lb_probe_ports == (16001,)
    assert gs.hosting_environment_url.startswith("http://168.63.129.16:80/machine/")
    assert ("&type=hostingEnvironmentConfig&" in gs.hosting_environment_url)


def test_goal_state_optional_urls(fixtures_dir):
    wire = fixtures_dir / "wire"
    assert parse_goal_state((wire / "goal_state_no_ext.xml").read_bytes()).extensions_config_url is None
    assert parse_goal_state((wire / "goal_state_no_certs.xml").read_bytes()).certificates_url is None
    remote = parse_goal_state((wire / "goal_state_remote_access.xml").read_bytes())
    assert remote.remote_access_url == "http://168.63.129.16:80/remoteaccessinfouri/"
    gs = parse_goal_state((wire / "goal_state.xml").read_bytes())
    assert gs.deployment_id == "bc8b9d47-b5ed-4704-85d9-fd74cc967ec2"


def test_goal_state_without_role_instance_is_not_ready(fixtures_dir):
    with pytest.raises(NoRoleInstanceError):
        parse_goal_state((fixtures_dir / "wire" / "goal_state_noop.xml").read_bytes())


@pytest.mark.parametrize("drop,reason", [
    ("<Incarnation>1</Incarnation>", "missing Incarnation"),
    ("<ContainerId>c</ContainerId>", "missing ContainerId"),
    ("<InstanceId>i</InstanceId>", "missing InstanceId"),
])
def test_goal_state_missing_required_field(drop, reason):
    xml = GOAL_STATE_TEMPLATE.format(inc="1", cid="c", iid="i", url="http://x/", name="n.1")
    assert drop in xml
    with pytest.raises(DocumentError) as e:
        parse_goal_state(xml.replace(drop, ""))
    assert e.value.document == "GoalState"
    assert reason in e.value.reason


def test_bom_is_stripped():
    xml = GOAL_STATE_TEMPLATE.format(inc="7", cid="c", iid="i", url="http://x/", name="n.1")
    assert parse_goal_state(b"\xef\xbb\xbf" + xml.encode()).incarnation == "7"


BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
        + "".join(' <!ENTITY lol%d "%s">\n' % (i, ("&lol%s;" % (i - 1 if i > 1 else "")) * 10)
                  for i in range(1, 10))
        + ']>\n<GoalState><Incarnation>&lol9;</Incarnation></GoalState>\n')


@pytest.mark.parametrize("doc", [
    BOMB,
    '<?xml version="1.0"?><!DOCTYPE GoalState SYSTEM "http://127.0.0.1:9/x.dtd"><GoalState/>',
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><GoalState>&e;</GoalState>',
])
def test_dtds_and_entities_are_refused(doc):
    with pytest.raises(DocumentError) as e:
        parse_goal_state(doc)
    assert "DTD" in e.value.reason or "entit" in e.value.reason


@pytest.mark.parametrize("doc,reason", [
    (b"", "empty"),
    (b"<GoalState><Incarnation>1</Incarn", "malformed"),
    (b"<Versions/>", "root element is Versions"),
    (b"\xff\xfe<\x00G\x00", "XML"),
])
def test_malformed_documents(doc, reason):
    with pytest.raises(DocumentError) as e:
        parse_goal_state(doc)
    assert reason in e.value.reason


def test_size_cap():
    with pytest.raises(DocumentError, match="larger than"):
        documents.parse_xml(b"<a>" + b"x" * 100 + b"</a>", "Doc", max_bytes=50)


def test_versions(fixtures_dir):
    v = documents.parse_versions((fixtures_dir / "wire" / "version_info.xml").read_bytes())
    assert v.preferred == "2012-11-30"
    assert v.supported == ("2010-12-15", "2010-28-10")
    assert v.supports("2012-11-30") and not v.supports("2099-01-01")
    with pytest.raises(DocumentError):
        documents.parse_versions(b"<Versions/>")


def test_hosting_environment_and_shared_config(fixtures_dir):
    he = documents.parse_hosting_environment((fixtures_dir / "wire" / "hosting_env.xml").read_bytes())
    assert (he.vm_name, he.role_name, he.deployment_name) == (
        "MachineRole_IN_0", "MachineRole", "db00a7755a5e4e8a8fe4b19bc3b330c3")
    with pytest.raises(DocumentError, match="Incarnation@instance"):
        documents.parse_hosting_environment(
            b'<HostingEnvironmentConfig><Role name="r"/></HostingEnvironmentConfig>')
    raw = (fixtures_dir / "wire" / "shared_config.xml").read_bytes()
    sc = documents.parse_shared_config(raw)
    assert sc.xml == raw and sc.deployment_name


def test_hosting_environment_without_role_or_deployment_name_is_valid(fixtures_dir):
    """waagent reads Role@name and Deployment@name for telemetry only: a document without
    them (the fixture with the attributes removed) is still the goal state's."""
    raw = (fixtures_dir / "wire" / "hosting_env.xml").read_text()
    raw = raw.replace(' name="MachineRole" hostingEnvironmentVersion', ' hostingEnvironmentVersion')
    raw = raw.replace('<Deployment name="db00a7755a5e4e8a8fe4b19bc3b330c3" ', '<Deployment ')
    assert 'name="MachineRole"' not in raw.split("<HostingEnvironmentSettings")[0]
    he = documents.parse_hosting_environment(raw.encode())
    assert (he.vm_name, he.role_name, he.deployment_name) == ("MachineRole_IN_0", None, None)
    bare = documents.parse_hosting_environment(
        b'<HostingEnvironmentConfig><Incarnation instance="x"/></HostingEnvironmentConfig>')
    assert (bare.vm_name, bare.role_name, bare.deployment_name) == ("x", None, None)


@pytest.mark.parametrize("name,has", [("certs.xml", True), ("certs_format_not_pfx.xml", False),
                                      ("certs_no_format_specified.xml", False)])
def test_certificate_envelopes(fixtures_dir, name, has):
    envelope = documents.parse_certificate_file((fixtures_dir / "wire" / name).read_bytes())
    assert envelope.has_certificates is has
    if has:
        assert "\n" not in envelope.data and envelope.data.startswith("MIIO")


# --- property-based -------------------------------------------------------------------------

xml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                          blacklist_characters="\x00\r"), max_size=40)
safe_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_record_or_a_document_error(data):
    try:
        parse_goal_state(data)
    except DocumentError:
        pass


@settings(max_examples=200, deadline=None)
@given(inc=safe_token, cid=safe_token, iid=xml_text.filter(lambda s: s.strip()), name=safe_token)
def test_generated_goal_states_round_trip(inc, cid, iid, name):
    from xml.sax.saxutils import escape
    xml = GOAL_STATE_TEMPLATE.format(inc=inc, cid=cid, iid=escape(iid),
                                     url="http://127.0.0.1/?a=1&amp;b=2", name=name)
    try:
        gs = parse_goal_state(xml)
    except DocumentError as e:  # only characters XML 1.0 cannot carry may be refused
        assert "malformed" in e.reason
        return
    assert gs.incarnation == inc and gs.container_id == cid
    assert gs.role_instance_id == iid.strip()
    assert gs.extensions_config_url == "http://127.0.0.1/?a=1&b=2"


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_truncated_fixture_never_crashes(fixtures_dir, data):
    raw = (fixtures_dir / "wire" / "goal_state.xml").read_bytes()
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    try:
        parse_goal_state(raw[:cut])
    except DocumentError:
        pass
