"""Safe XML reading for platform documents, and the small documents: Versions,
HostingEnvironmentConfig, SharedConfig, the Certificates envelope (protocol.md §1.3, §1.5, §1.6).

Every document is parsed with defusedxml with DTDs, entities and external references refused
(an entity bomb is rejected before it expands), after a size cap and with a UTF-8 BOM
stripped. Records are NamedTuples; a missing required field raises DocumentError with
the document's name and what is missing, so the caller keeps its last-known-good state.
"""

from typing import Iterator, NamedTuple, Optional, Tuple
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from workers.platform.errors import DocumentError

BOM = b"\xef\xbb\xbf"
# Protocol documents are a few KiB to a few MiB; the HTTP layer caps reads with
# Protocol.MaxResponseBytes, this is the last line for callers passing bytes directly.
DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def parse_xml(data, document: str, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> Element:
    """The root element of `data` (bytes or str), or DocumentError saying why not."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise DocumentError(document, "not a byte string")
    if len(data) > max_bytes:
        raise DocumentError(document, "larger than %d bytes" % max_bytes)
    data = bytes(data)
    if data.startswith(BOM):
        data = data[len(BOM):]
    if not data.strip():
        raise DocumentError(document, "empty document")
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except defusedxml.DTDForbidden:
        raise DocumentError(document, "a DTD is not allowed") from None
    except defusedxml.EntitiesForbidden:
        raise DocumentError(document, "entity declarations are not allowed") from None
    except defusedxml.DefusedXmlException as e:
        raise DocumentError(document, "refused: %s" % type(e).__name__) from None
    except ParseError as e:
        raise DocumentError(document, "malformed XML: %s" % e) from None
    except (ValueError, UnicodeError, RecursionError) as e:
        raise DocumentError(document, "unreadable XML: %s" % type(e).__name__) from None


def local_name(tag) -> str:
    """`{namespace}Name` -> `Name` (platform documents mix namespaced and plain tags)."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def children(element: Optional[Element], name: str) -> Iterator[Element]:
    if element is None:
        return iter(())
    return (c for c in element if local_name(c.tag) == name)


def child(element: Optional[Element], *path: str) -> Optional[Element]:
    """The first element along `path` of local names, or None."""
    for name in path:
        if element is None:
            return None
        element = next(children(element, name), None)
    return element


def text(element: Optional[Element], *path: str) -> Optional[str]:
    """Stripped text at `path`, None when the element is absent or empty."""
    node = child(element, *path)
    if node is None or node.text is None:
        return None
    value = node.text.strip()
    return value or None


def required_text(element: Element, document: str, *path: str) -> str:
    value = text(element, *path)
    if value is None:
        raise DocumentError(document, "missing %s" % "/".join(path))
    return value


def attribute(element: Optional[Element], name: str) -> Optional[str]:
    """An attribute by local name (namespaced attributes included), None when absent."""
    if element is None:
        return None
    for key, value in element.attrib.items():
        if local_name(key) == name:
            return value
    return None


def expect_root(root: Element, document: str, name: str) -> None:
    if local_name(root.tag) != name:
        raise DocumentError(document, "root element is %s, expected %s"
                            % (local_name(root.tag) or "?", name))


# --- Versions (§1.3) -------------------------------------------------------------------------

class Versions(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    preferred: Optional[str]
    supported: Tuple[str, ...]

    def supports(self, version: str) -> bool:
        return version == self.preferred or version in self.supported


def parse_versions(data) -> Versions:
    root = parse_xml(data, "Versions")
    expect_root(root, "Versions", "Versions")
    preferred = text(root, "Preferred", "Version")
    supported = tuple(v.text.strip() for v in children(child(root, "Supported"), "Version")
                      if v.text and v.text.strip())
    if preferred is None and not supported:
        raise DocumentError("Versions", "no Preferred or Supported version")
    return Versions(preferred, supported)


# --- HostingEnvironmentConfig (§1.5) ---------------------------------------------------------

class HostingEnvironment(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    vm_name: str                    # Incarnation@instance (the role instance name)
    role_name: Optional[str]        # Role@name; None when the document has none
    deployment_name: Optional[str]  # Deployment@name (the tenant name); None when absent


def parse_hosting_environment(data) -> HostingEnvironment:
    """Only Incarnation@instance is required: waagent reads Role@name and Deployment@name
    for telemetry only, and a document without them is valid."""
    doc = "HostingEnvironmentConfig"
    root = parse_xml(data, doc)
    expect_root(root, doc, doc)
    vm_name = attribute(child(root, "Incarnation"), "instance")
    if not vm_name:
        raise DocumentError(doc, "missing Incarnation@instance")
    return HostingEnvironment(vm_name, attribute(child(root, "Role"), "name") or None,
                              attribute(child(root, "Deployment"), "name") or None)


# --- SharedConfig (§1.5) ----------------------------------------------------------------------

class SharedConfig(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    """Opaque to the agent: kept verbatim (checked to be well-formed) for whoever needs it."""
    xml: bytes
    deployment_name: Optional[str]
    role_name: Optional[str]
    # RDMA sizes: the first <Instance>'s rdmaIPv4Address and rdmaMacAddress, as waagent
    # reads them (rdma.py setup_rdma_device); unchecked text, None when absent.
    rdma_ipv4: Optional[str] = None
    rdma_mac: Optional[str] = None


def parse_shared_config(data) -> SharedConfig:
    doc = "SharedConfig"
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    root = parse_xml(raw, doc)
    expect_root(root, doc, doc)
    instance = next((e for e in root.iter() if local_name(e.tag) == "Instance"), None)
    return SharedConfig(raw, attribute(child(root, "Deployment"), "name"),
                        attribute(child(root, "Role"), "name"),
                        attribute(instance, "rdmaIPv4Address"),
                        attribute(instance, "rdmaMacAddress"))


# --- The Certificates envelope (§1.6) ---------------------------------------------------------

PKCS7_PFX_FORMAT = "Pkcs7BlobWithPfxContents"


class CertificateFile(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    incarnation: Optional[str]
    format: Optional[str]
    data: Optional[str]       # base64 CMS EnvelopedData; None: no certificates

    @property
    def has_certificates(self) -> bool:
        return self.data is not None and self.format == PKCS7_PFX_FORMAT


def parse_certificate_file(data) -> CertificateFile:
    doc = "CertificateFile"
    root = parse_xml(data, doc)
    expect_root(root, doc, doc)
    payload = text(root, "Data")
    if payload is not None:
        payload = "".join(payload.split())
    return CertificateFile(text(root, "Incarnation"), text(root, "Format"), payload)
